"""Which of a run's score files the report compares: the measurement (data set, templates, subset) that the
file name's parts after ``__`` name, shared by most runs; never whichever file was written last."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from results.scores import Score, load_scores, shared_measurement


def _score(run: str, stem: str, date: str = "2026-01-01") -> Score:
    return Score(path=Path(f"scores/imagenet_zeroshot/{stem}.json"), benchmark="imagenet_zeroshot",
                 model_id=stem.split("__")[0], model={}, recipe_sha256=None, git_commit=None, date=date,
                 settings={}, metrics={}, run=SimpleNamespace(label=run), status="run",
                 measurement=stem.split("__", 1)[1] if "__" in stem else "")


def test_the_measurement_most_runs_share_is_compared_and_a_later_imagenetv2_file_is_not():
    val_a, v2_a = _score("a", "a__imagenet-val"), _score("a", "a__imagenetv2-matched-frequency", "2026-02-01")
    val_b = _score("b", "b__imagenet-val")
    notes = shared_measurement([val_a, v2_a, val_b])
    assert [s.status for s in (val_a, v2_a, val_b)] == ["run", "other measurement", "run"]
    assert len(notes) == 1 and "imagenetv2-matched-frequency" in notes[0] and "imagenet-val" in notes[0]


def test_on_a_tie_the_full_imagenet_val_measurement_wins_over_subsets_and_other_sets():
    full, limited = _score("a", "a__imagenet-val"), _score("a", "a__imagenet-val__limit100", "2026-03-01")
    simple = _score("a", "a__imagenet-val__templates-simple", "2026-03-02")
    v2 = _score("a", "a__imagenetv2-matched-frequency")
    shared_measurement([limited, simple, v2, full])
    assert full.status == "run"
    assert {s.status for s in (limited, simple, v2)} == {"other measurement"}


def test_files_from_before_named_measurements_are_one_measurement():
    old, new = _score("a", "a"), _score("b", "b")
    assert shared_measurement([old, new]) == [] and old.status == new.status == "run"


def test_a_clip_benchmark_result_is_read_as_its_checkpoints_imagenet_score_in_percent(tmp_path):
    # the keys clip_benchmark.cli dumps; the wrapper hands over NAME,PATH with PATH the run's checkpoint
    checkpoint = tmp_path / "runs" / "mixer-seed0" / "checkpoints" / "step_00000640.pt"
    record = {"dataset": "imagenet1k", "model": "mixer-seed0-step_00000640", "pretrained": str(checkpoint),
              "task": "zeroshot_classification", "language": "en",
              "metrics": {"acc1": 0.4125, "acc5": 0.75, "mean_per_class_recall": 0.4}}
    folder = tmp_path / "scores" / "clip_benchmark"
    folder.mkdir(parents=True)
    (folder / "imagenet1k_mixer-seed0_en_zeroshot_classification.json").write_text(json.dumps(record))
    score, = load_scores(tmp_path / "scores")
    assert score.benchmark == "imagenet_zeroshot" and score.step == 640
    assert score.metrics == {"top1": 41.25, "top5": 75.0, "mean_per_class_recall": 40.0}
    assert Path(score.model["checkpoint"]).parent.parent == checkpoint.parent.parent
    assert score.measurement == "clip_benchmark-imagenet1k"
