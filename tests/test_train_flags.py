"""The training CLI speaks open_clip_train's language: every flag has help, open_clip's spellings of the
same meaning work (`--precision amp_bf16`, `--report-to tensorboard,wandb`, `--resume latest` on a first
launch), the weight-casting ones are refused in one line; what the run tells its user: out.log,
namespaced tracker tags without all-zero curves, the scoring the "next:" lines suggest."""

from __future__ import annotations

import re
import sys

import pytest

from launch import train
from launch.config import build_parser, parse_experiment
from launch.data import data_identity
from launch.flag_help import tracker_names
from launch.run_record import OutputLog, log_output_to, next_commands, tracker_values

TINY = ["--tower", "mixer", "--variant", "w64", "--steps", "2", "--batch-size", "8", "--eval-samples", "16",
        "--workers", "0", "--log-every", "1"]


def test_every_flag_has_help_that_says_more_than_its_default():
    parser = build_parser()
    for action in parser._actions:
        text = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        assert len(text.split()) >= 3, f"{action.option_strings}: help is {action.help!r}"
    precision = next(a.help for a in parser._actions if "--precision" in a.option_strings)
    assert "open_clip's amp_bf16" in precision


def _hash(argv: list[str]) -> tuple[str, str]:
    recipe = parse_experiment(argv)[0].recipe
    return recipe.precision, recipe.sha256(1, data_identity(None))


@pytest.mark.parametrize(("spelling", "ours"),
                         [("amp_bf16", "bf16"), ("amp_bfloat16", "bf16"), ("amp", "fp16")])
def test_open_clip_autocast_spellings_are_ours_with_the_same_hash(spelling, ours, tmp_path):
    assert _hash(["--precision", spelling]) == _hash(["--precision", ours])
    config = tmp_path / "recipe.yaml"
    config.write_text(f"precision: {spelling}\n")
    assert _hash(["--config", str(config)]) == _hash(["--precision", ours])


@pytest.mark.parametrize("spelling", ["pure_bf16", "pure_fp16", "fp8"])
def test_weight_casting_and_unknown_precisions_are_one_line_exit_2(spelling, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(["--precision", spelling])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert ("--precision bf16 here is open_clip's amp_bf16" if spelling.startswith("pure") else
            "--precision must be one of") in err, err


def test_report_to_takes_open_clips_comma_list(capsys):
    assert tracker_names("tensorboard,wandb") == tracker_names("all") == ["tensorboard", "wandb"]
    assert tracker_names("wandb, tensorboard") == ["wandb", "tensorboard"]
    assert parse_experiment(["--report-to", "tensorboard,wandb"])[1].report_to == "tensorboard,wandb"
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(["--report-to", "tensorboard,mlflow"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--report-to tensorboard,mlflow" in err


def test_tracker_values_hold_back_zero_counters_and_repeated_set_sizes():
    logged: dict = {}
    first = tracker_values({"loss": 2.0, "skipped/corrupt_image": 0, "nonfinite_steps": 0}, logged)
    assert first == {"train/loss": 2.0}
    assert tracker_values({"skipped/corrupt_image": 3, "nonfinite_steps": 0}, logged) == \
        {"train/skipped/corrupt_image": 3}
    # once a counter has a curve it goes on, so a later 0 (a fresh count after a resume) shows
    assert tracker_values({"skipped/corrupt_image": 0}, logged) == {"train/skipped/corrupt_image": 0}
    evals = {"eval/toy_top1": 50.0, "eval/toy_n": 64, "eval/toy_n_seen": 48}
    assert tracker_values(evals, logged) == evals
    assert tracker_values({**evals, "eval/toy_top1": 60.0}, logged) == {"eval/toy_top1": 60.0}


def test_output_log_keeps_lines_and_a_bars_last_drawing(tmp_path, capsys):
    log = tmp_path / "out.log"
    with OutputLog():
        print("precision: fp32 (why)")
        sys.stderr.write("\rrun:  50%|#   | 1/2")
        sys.stderr.write("\rrun: 100%|####| 2/2\n")
        log_output_to(log)
        print("run written to x/")
        sys.stderr.write("error: no newline at the end")
    assert capsys.readouterr().out == "precision: fp32 (why)\nrun written to x/\n"  # the terminal as before
    lines = log.read_text().splitlines()
    assert lines[0].startswith("=== ") and "python " in lines[0]
    assert lines[1:] == ["precision: fp32 (why)", "run: 100%|####| 2/2", "run written to x/",
                         "error: no newline at the end"]
    with OutputLog():
        print("second launch")
        log_output_to(log)
    assert log.read_text().count("=== ") == 2 and log.read_text().endswith("second launch\n")  # appended


def test_next_lines_score_a_shards_run_on_imagenet_and_sts():
    toy = next_commands("runs/r")
    assert "--model runs/r --dataset toy" in toy and "python -m benchmarks.sts --model runs/r" in toy
    laion = next_commands("runs/r", "/data/laion400m/{00000..41407}.tar", "/data/imagenet/val")
    assert "--dataset toy" not in laion
    assert "python -m benchmarks.imagenet_zeroshot --model runs/r --data /data/imagenet/val" in laion
    assert "python -m benchmarks.sts --model runs/r --source hf" in laion
    assert "--data /path/to/imagenet/val" in next_commands("runs/r", "/data/laion400m/{00000..00001}.tar")


def test_resume_latest_starts_a_first_launch_and_out_log_grows_per_launch(tmp_path, capsys):
    args = [*TINY, "--runs-dir", str(tmp_path), "--name", "r", "--resume", "latest"]
    assert train.main(args) == 0
    out = capsys.readouterr().out
    run = tmp_path / "r"
    assert f"--resume latest: no checkpoint in {run / 'checkpoints'} yet; starting the run" in out
    assert (run / "checkpoints" / "step_00000002.pt").is_file()
    first = (run / "out.log").read_text()
    assert first.count("=== ") == 1 and "precision: " in first and f"run written to {run}/" in first
    assert "--resume latest: no checkpoint" in first  # printed before the folder existed, kept
    assert train.main(args) == 0  # the finished run again: continues (at its end) from its checkpoint
    second = (run / "out.log").read_text()
    assert second.startswith(first) and second.count("=== ") == 2
    assert "no checkpoint" not in second[len(first):]


def test_help_prints(capsys):  # argparse formats every help with %: a stray one breaks --help
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0 and "follows --steps" in capsys.readouterr().out
