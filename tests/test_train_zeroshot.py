"""In-training zero-shot: --imagenet-val scores ImageNet next to the toy set through the benchmark's own
code (the logged numbers are the benchmark's on the saved weights), and a bad path is refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.encoder import load_our_model
from benchmarks.imagenet_zeroshot import zero_shot_eval
from benchmarks.zeroshot_classifier import TEMPLATE_SETS
from launch import train
from launch.config import EVAL_TEMPLATES, parse_experiment

EVAL_SAMPLES = 32


def _args(runs: Path, name: str, *extra: str) -> list[str]:
    return ["--tower", "mixer", "--steps", "2", "--warmup-steps", "1", "--batch-size", "16", "--workers", "0",
            "--eval-samples", str(EVAL_SAMPLES), "--runs-dir", str(runs), "--name", name, *extra]


def test_imagenet_is_scored_next_to_toy_with_the_benchmarks_numbers(tmp_path, shared_data, monkeypatch):
    data = shared_data / "imagenet_samples"
    # one template instead of 7: the 1000-class classifier is the cost of this test, not what it checks
    monkeypatch.setitem(TEMPLATE_SETS, "simple", TEMPLATE_SETS["simple"][:1])
    assert train.main(_args(tmp_path, "run", "--imagenet-val", str(data), "--eval-templates", "simple")) == 0
    run_dir = tmp_path / "run"
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert logged["step"] == 2 and logged["eval/imagenet_n"] == logged["eval/toy_n"] == EVAL_SAMPLES
    assert json.loads((run_dir / "final_eval.json").read_text())["eval/imagenet_top1"] == logged[
        "eval/imagenet_top1"]
    imagenet = {key: logged[f"eval/imagenet_{key}"] for key in ("top1", "top5", "top1_ci95")}
    assert 0 <= imagenet["top1"] <= imagenet["top5"] <= 100
    assert imagenet["top1_ci95"][0] <= imagenet["top1"] <= imagenet["top1_ci95"][1]
    # both sets go through one loop; on toy (a cheap classifier) the benchmark, run separately on the
    # final checkpoint, gives the logged numbers exactly
    encoder = load_our_model(str(run_dir), "cpu")
    expected = zero_shot_eval(encoder, "toy", limit=EVAL_SAMPLES, progress=False)
    for key in ("top1", "top5", "mean_per_class_recall", "top1_ci95", "shape_acc"):
        assert logged[f"eval/toy_{key}"] == expected[key]


def test_bad_imagenet_val_exits_2_before_training(tmp_path, capsys):
    assert train.main(_args(tmp_path, "bad", "--imagenet-val", str(tmp_path / "missing"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--imagenet-val" in err[0] and "ILSVRC val layout" in err[0]
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_eval_templates_flag_offers_the_benchmarks_sets():
    assert set(EVAL_TEMPLATES) == set(TEMPLATE_SETS)
    _, options = parse_experiment(["--eval-templates", "simple", "--imagenet-val", "x"])
    assert options.eval_templates == "simple" and options.imagenet_val == "x"
    with pytest.raises(SystemExit):
        parse_experiment(["--eval-templates", "fancy"])


@pytest.mark.parametrize("flags, fragment", [
    (["--evals", "toy,imagenet"], "imagenet needs its data"),  # imagenet chosen, no --imagenet-val
    (["--evals", "toy,cifar"], "'cifar': not a zero-shot set; expected one of toy, imagenet"),
])
def test_evals_by_name_are_checked_by_the_runners_code_before_training(tmp_path, capsys, flags, fragment):
    assert train.main(_args(tmp_path, "bad", *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()
