"""The run folder's one owner: its layout, its `latest` pointer, its step checkpoints, atomic writes,
and reading its config and metrics. Standard library only, so `results/` reads runs without torch and
every layer (towers, benchmarks, launch, results) names a run's files through this module.

    runs/<name>/config.json        the resolved experiment, recipe_sha256, commit, versions (launch/train.py)
    runs/<name>/metrics.jsonl      one JSON object per log step and per evaluation
    runs/<name>/final_eval.json    the last evaluation, written at the end
    runs/<name>/checkpoints/       step_00001000.pt ... and `latest`, a text file naming the newest
    runs/<name>/tensorboard/       TensorBoard events
    runs/<name>/out.log            what the run printed, appended by every launch (requeues too)
    runs/<name>/preempted.json     present while the run stopped on a signal and wants requeueing

    from runfolder import RunFolder
    run = RunFolder("runs/mixer-tiny-seed0")
    run.latest(), run.step_files(), run.read_config()["recipe_sha256"]
    run.read_run_config().recipe, run.read_metric_rows().evals, run.read_final_eval()

The files' contents have one owner each beside it: `runfolder.records` (config.json, metrics.jsonl,
final_eval.json), `runfolder.score_records` (the benchmarks' score JSON), `runfolder.vocabulary` (the
names every layer shares), `runfolder.atomic` (atomic writes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runfolder.atomic import atomic_write, atomic_write_text  # noqa: F401 - re-exported
from runfolder.records import (
    MetricRows,
    RunConfig,
    read_config,
    read_final_eval,
    read_metric_lines,
    read_metric_rows,
)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
FINAL_EVAL = "final_eval.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
OUT_LOG = "out.log"
PREEMPTED = "preempted.json"  # launch/faults.py writes it; launch/slurm/train.sbatch requeues on it
LATEST = "latest"  # checkpoints/latest: a text file naming the newest checkpoint
STEP_FILE = re.compile(r"step_(\d{8})\.pt")


def checkpoint_name(step: int) -> str:
    """The file name of step `step`'s checkpoint (zero-padded, so names sort by step)."""
    return f"step_{step:08d}.pt"


def step_files(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of a checkpoints folder's step files, newest first."""
    matches = ((STEP_FILE.fullmatch(p.name), p) for p in Path(folder).glob("step_*.pt"))
    found = [(int(m.group(1)), p) for m, p in matches if m]
    return sorted(found, reverse=True)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint file `folder/latest` names, or None when there is no pointer. The named file may
    be missing (callers say so in their own words)."""
    pointer = Path(folder) / LATEST
    return Path(folder) / pointer.read_text().strip() if pointer.is_file() else None


def point_latest(folder: str | os.PathLike, path: Path | None) -> None:
    """Make `folder/latest` name `path` (atomically), or remove the pointer for None."""
    if path is None:
        (Path(folder) / LATEST).unlink(missing_ok=True)
    else:
        atomic_write(Path(folder) / LATEST, lambda f: f.write(path.name.encode() + b"\n"))


@dataclass(frozen=True)
class RunFolder:
    """One run's folder, `runs/<name>/` (see the module docstring)."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def final_eval(self) -> Path:
        return self.path / FINAL_EVAL

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def out_log(self) -> Path:
        return self.path / OUT_LOG

    @property
    def preempted(self) -> Path:
        return self.path / PREEMPTED

    def is_run(self) -> bool:
        """Whether a trainer wrote this folder (it has a config.json)."""
        return self.config.is_file()

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.checkpoints)

    def step_files(self) -> list[tuple[int, Path]]:
        return step_files(self.checkpoints)

    def read_config(self) -> dict[str, Any]:
        """config.json's object as a dict (`read_run_config().data`)."""
        return self.read_run_config().data

    def read_run_config(self) -> RunConfig:
        """config.json, typed (runfolder.records.RunConfig; a missing or malformed file raises
        RecordError, a ValueError whose one line names the file)."""
        return read_config(self.config)

    def read_metrics(self) -> list[Any]:
        """metrics.jsonl's lines as written, parsed; a blank line is skipped (a bad one raises
        RecordError naming the file and line)."""
        return [record for _, record in read_metric_lines(self.metrics)]

    def read_metric_rows(self) -> MetricRows:
        """metrics.jsonl as training and evaluation rows, one per step (runfolder.records)."""
        return read_metric_rows(self.metrics)

    def read_final_eval(self) -> Any | None:
        """final_eval.json, or None when the run has none."""
        return read_final_eval(self.final_eval)

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> RunFolder | None:
        """The run a checkpoint file belongs to (`RUN/checkpoints/step_*.pt`), or None."""
        path = Path(checkpoint).resolve()
        run = cls(path.parent.parent)
        return run if path.parent.name == CHECKPOINTS and run.is_run() else None
