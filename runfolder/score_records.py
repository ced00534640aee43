"""The benchmark score record: `<scores-dir>/<benchmark>/<model-id>[__<part>...].json`, written by every
runner (benchmarks/provenance.py stamps it) and read by the report (results/scores.py). Standard library
only.

    {benchmark, benchmark_version, model_id, model {..., run_dir?, run_name?, checkpoint?, step?},
     checkpoint_sha256, recipe_sha256, git_commit, versions, date, command, settings, metrics}

The ``__`` parts of the file name name what makes the measurement differ from another of the same model
(data set, template set, ``--limit``), so an ImageNetV2 or ``--limit 100`` run never overwrites the
ImageNet-val result.

    from runfolder.score_records import read_score_record
    record = read_score_record(path)   # ScoreRecord, or RecordError (one line)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runfolder.records import RecordError, read_json, write_json

PART_SEPARATOR = "__"


def safe_model_id(model_id: str) -> str:
    """A file-name-safe model id (keeps letters, digits and ``._+-``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", model_id).strip("._") or "model"


def result_name(model_id: str, *parts: str | None) -> str:
    """``<model-id>[__<part>...]``: the parts (data set, non-default settings) that make this
    measurement differ from another of the same model; empty parts are left out."""
    return PART_SEPARATOR.join([safe_model_id(str(model_id)), *(safe_model_id(str(p)) for p in parts if p)])


def measurement_of(path: str | os.PathLike) -> str:
    """What a score file measured beyond the model: its name's parts after ``__``, "" for the default."""
    stem = Path(path).stem
    return stem.split(PART_SEPARATOR, 1)[1] if PART_SEPARATOR in stem else ""


def score_record(benchmark: str, benchmark_version: str, model: dict[str, Any], code: dict[str, str | None],
                 versions: dict[str, str | None], date: str, command: str, settings: dict[str, Any],
                 metrics: dict[str, Any]) -> dict[str, Any]:
    """The record as it is written: provenance first, then the run's settings and metrics."""
    return {
        "benchmark": benchmark,
        "benchmark_version": benchmark_version,
        "model_id": model.get("model_id"),
        "model": model,
        "checkpoint_sha256": model.get("checkpoint_sha256"),
        "recipe_sha256": model.get("recipe_sha256"),
        **code,  # git_commit, git_diff_sha256 (runfolder.code_version)
        "versions": versions,
        "date": date,
        "command": command,
        "settings": settings,
        "metrics": metrics,
    }


def write_score_record(record: dict[str, Any], results_dir: str | os.PathLike,
                       name: str | None = None) -> Path:
    """Write ``record`` to ``<results_dir>/<benchmark>/<name or model-id>.json``; returns the path."""
    name = name or safe_model_id(str(record["model_id"]))
    return write_json(Path(results_dir) / record["benchmark"] / f"{name}.json", record)


@dataclass(frozen=True)
class ScoreRecord:
    """A score record as read back (older records may lack any key but ``benchmark`` and ``metrics``)."""

    path: Path
    benchmark: str
    model_id: str  # the record's, else the file name's stem
    model: dict[str, Any]
    recipe_sha256: str | None  # the record's, else the model's
    git_commit: str | None
    date: str | None
    settings: dict[str, Any]
    metrics: dict[str, Any]
    benchmark_version: str | None = None

    @property
    def measurement(self) -> str:
        return measurement_of(self.path)


def is_clip_benchmark_result(record: Any) -> bool:
    """A CLIP_benchmark result file ({dataset, model, pretrained, task, metrics}), not one of ours."""
    return (isinstance(record, dict) and "benchmark" not in record
            and isinstance(record.get("metrics"), dict) and {"dataset", "task"} <= record.keys())


def read_score_json(path: str | os.PathLike) -> Any:
    return read_json(path, "benchmark result")


def score_from_json(path: str | os.PathLike, record: Any) -> ScoreRecord:
    path = Path(path)
    if not isinstance(record, dict) or not isinstance(record.get("benchmark"), str) \
            or not isinstance(record.get("metrics"), dict):
        raise RecordError(f"{path}: expected a benchmark result with 'benchmark' and 'metrics' "
                          "(as benchmarks/provenance.py writes it)")
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    return ScoreRecord(path=path, benchmark=record["benchmark"],
                       model_id=str(record.get("model_id") or path.stem), model=model,
                       recipe_sha256=record.get("recipe_sha256") or model.get("recipe_sha256"),
                       git_commit=record.get("git_commit"), date=record.get("date"),
                       settings=record.get("settings") or {}, metrics=record["metrics"],
                       benchmark_version=record.get("benchmark_version"))


def read_score_record(path: str | os.PathLike) -> ScoreRecord:
    return score_from_json(path, read_score_json(path))
