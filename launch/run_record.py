"""What a run writes besides checkpoints: `config.json`, `metrics.jsonl` and its trackers' logs.

`config.json` holds the resolved experiment, `recipe_sha256`, git commit, library versions, world
size, parameter counts and FLOPs per sample, so every number of the run can be traced back.
`metrics.jsonl` has one JSON object per log step (and per evaluation) that `results.report` reads;
each carries `time` (ISO 8601 wall clock, UTC) and `elapsed_s` (seconds since this launch started).
The same numbers go to the experiment trackers `--report-to` names (open_clip's flag: `tensorboard`,
the default, under `RUN/tensorboard/`; `wandb` under `RUN/wandb/`, needing the `[wandb]` extra; `all`
for both), through Accelerate's tracker API, with the resolved `config.json` as the run's config.
Only the main process logs; a requeued run continues its wandb run (`wandb_run_id`).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import shlex
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

from runfolder import TENSORBOARD, RunFolder

TENSORBOARD_FOLDER = TENSORBOARD  # RUN/tensorboard/ (runfolder owns the layout)


class TrackerUnavailableError(RuntimeError):
    """A tracker was asked for whose package is not installed; the message is one line."""


def make_trackers(report_to: str, run_dir: Path, wandb_project: str) -> list[GeneralTracker]:
    """Accelerate's trackers for `--report-to` (`Accelerator(log_with=...)`); nothing starts until
    `init_trackers`. `all` means TensorBoard and wandb (open_clip's meaning), not Accelerate's "every
    tracker installed here"."""
    names = ["tensorboard", "wandb"] if report_to == "all" else [report_to]
    for name in names:
        if importlib.util.find_spec(name) is None:
            extra = ' (pip install -e ".[wandb]")' if name == "wandb" else ""
            raise TrackerUnavailableError(f"--report-to {report_to}: the {name} package is not "
                                          f"installed{extra}")
    trackers: list[GeneralTracker] = []
    if "tensorboard" in names:
        trackers.append(TensorBoardTracker(TENSORBOARD_FOLDER, run_dir))
    if "wandb" in names:
        # resume="allow" with an id fixed by the run folder: a requeued job continues the same run
        trackers.append(WandBTracker(wandb_project, dir=str(run_dir), name=run_dir.name,
                                     id=wandb_run_id(run_dir), resume="allow"))
    return trackers


def wandb_run_id(run_dir: Path) -> str:
    """`<run name>-<8 hex of the folder's absolute path>`: the same for every requeue of one run folder,
    different for two folders of the same name (train.py never reuses a folder without --resume)."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_dir.name)
    return f"{safe[:100]}-{digest}"


def flat_numbers(record: dict) -> dict:
    """A record's numbers, one level of dicts as `key/sub` (the names TensorBoard has always shown)."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{sub}": n for sub, n in value.items() if _is_number(n)})
        elif _is_number(value):
            flat[key] = value
    return flat


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config as `a/b/c` keys of plain values (TensorBoard's hparams take nothing else)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}/"))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[prefix + key] = "none" if value is None else value
        else:
            flat[prefix + key] = json.dumps(value)
    return flat


class MetricsLog:
    """Appends metrics to `metrics.jsonl` and the accelerator's trackers (`make_trackers`, passed as
    `log_with`), with `config` (what config.json holds) as the run's config. Only the main process
    makes one."""

    def __init__(self, run_dir: Path, started: float, accelerator: Accelerator, config: dict):
        self.started = started  # time.time() when this launch started
        self.path = RunFolder(run_dir).metrics
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.accelerator = accelerator
        # The project name goes to trackers Accelerate builds from names; ours are built already.
        accelerator.init_trackers(run_dir.name, config=flat_config(config))

    def log(self, record: dict) -> None:
        now = time.time()
        wall = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="seconds")
        record = {**record, "time": wall, "elapsed_s": round(now - self.started, 3)}
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()
        numbers = flat_numbers(record)
        step = numbers.pop("step")
        self.accelerator.log(numbers, step=step)

    def close(self) -> None:
        self.file.close()
        # Not accelerator.end_training(): it also destroys the process group the run still uses.
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()



def next_commands(run_dir: Path) -> str:
    """What a person does with a finished run: where it is, how to score it and compare it."""
    run = shlex.quote(str(run_dir))
    return "\n".join([
        f"run written to {run_dir}/ (config.json, metrics.jsonl, final_eval.json, checkpoints/, "
        "tensorboard/)",
        "next: score it",
        f"  python -m benchmarks.imagenet_zeroshot --model {run} --dataset toy",
        f"  python -m benchmarks.sts --model {run}",
        "and compare it with other runs of the same recipe (another tower, other seeds):",
        f"  python -m results.report {run} runs/OTHER_RUN ... --out report/",
    ])
