"""The report's untrained baselines: each arm's trained STS / word-order scores beside its architecture's
untrained score, ceiling flags, and never the untrained score taken for a run's own."""

from __future__ import annotations

import json

import pytest

from results.report import write_report


def make_run(runs_dir, tower: str, seed: int):
    run = runs_dir / f"{tower}-seed{seed}"
    run.mkdir(parents=True)
    recipe = {"seed": seed, "text_mask": "caption", "steps": 2}
    config = {"name": run.name, "model_name": f"{tower}-tiny",
              "experiment": {"image_tower": tower, "text_tower": tower, "variant": "tiny",
                             "token_mixing": "caption", "recipe": recipe},
              "recipe_sha256": "r", "flops_per_sample": {"train_gflops": 1.0}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 2, "samples_seen": 256, "loss": 1.0}) + "\n")
    (run / "final_eval.json").write_text(json.dumps({"step": 2, "eval/toy_top1": 50.0 + seed}))
    return run


def write_score(scores_dir, benchmark: str, model_id: str, model: dict, metrics: dict):
    folder = scores_dir / benchmark
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{model_id}.json").write_text(json.dumps(
        {"benchmark": benchmark, "model_id": model_id, "model": {"model_id": model_id, **model},
         "date": "2026-12-07", "settings": {}, "metrics": metrics}))


def word_order(top1: dict) -> dict:
    return {"tasks": {task: {"top1": value, "blind_top1": 50.0} for task, value in top1.items()}}


def test_baselines_sit_beside_the_trained_scores(tmp_path):
    runs = [make_run(tmp_path / "runs", "mixer", seed) for seed in (10, 11)]
    scores = tmp_path / "scores"
    for run, sts, shuffle in zip(runs, (30.0, 34.0), (80.0, 90.0), strict=True):
        own = {"source": "run", "run_dir": str(run), "run_name": run.name}
        write_score(scores, "sts", run.name, own, {"avg_7": sts})
        write_score(scores, "word_order", run.name, own,
                    word_order({"swap-attribute": 100.0, "swap-background": 99.5, "shuffle": shuffle}))
    untrained = {"source": "untrained run architecture", "untrained_of": str(runs[0])}
    write_score(scores, "sts", "mixer-seed10-untrained", untrained, {"avg_7": 28.0})
    write_score(scores, "word_order", "mixer-seed10-untrained", untrained,
                word_order({"swap-attribute": 99.5, "swap-background": 50.0, "shuffle": 51.0}))
    # a baseline of a run that is not compared has no row
    write_score(scores, "sts", "other-untrained", {**untrained, "untrained_of": str(tmp_path / "x")},
                {"avg_7": 1.0})
    result = write_report(runs, scores, tmp_path / "report")
    # the trained arm's STS mean is its runs' own, not pulled down by the untrained 28
    assert float(result["headline"].loc["mixer-tiny", "sts_avg_7_mean"]) == pytest.approx(32.0)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Untrained baselines" in report
    section = report.split("## Untrained baselines")[1].split("\n## ")[0]
    rows = {line.split("|")[2].strip(): [cell.strip() for cell in line.split("|")[1:-1]]
            for line in section.splitlines() if line.startswith("| ") and "mixer" in line}
    sts = rows["STS avg, 7 sets (Spearman x100)"]
    assert sts[2:6] == ["32.00 (2.83)", "2", "28.00", "10"] and sts[6] == "+4.00"
    assert rows["word order swap-attribute top-1 (%)"][7] == ("at ceiling (within 1 of 100); "
                                                             "untrained at ceiling")
    assert rows["word order swap-background top-1 (%)"][7] == "at ceiling (within 1 of 100)"
    assert rows["word order shuffle top-1 (%)"][6:8] == ["+34.0", ""]
    assert "1.00" not in section


def test_no_baseline_no_section(tmp_path):
    runs = [make_run(tmp_path / "runs", "mixer", seed) for seed in (10, 11)]
    write_report(runs, None, tmp_path / "report")
    assert "Untrained baselines" not in (tmp_path / "report" / "report.md").read_text()
