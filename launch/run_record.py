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
import re
import shlex
import sys
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

from benchmarks.provenance import command_line
from launch.flag_help import tracker_names
from runfolder import TENSORBOARD, RunFolder
from runfolder.errors import InputError
from runfolder.records import metrics_line, stamped
from runfolder.vocabulary import EVAL_PREFIX

TENSORBOARD_FOLDER = TENSORBOARD  # RUN/tensorboard/ (runfolder owns the layout)


class TrackerUnavailableError(InputError):
    """A tracker was asked for whose package is not installed; the message is one line."""


def make_trackers(report_to: str, run_dir: Path, wandb_project: str) -> list[GeneralTracker]:
    """Accelerate's trackers for `--report-to` (`Accelerator(log_with=...)`); nothing starts until
    `init_trackers`. `all` means TensorBoard and wandb (open_clip's meaning), not Accelerate's "every
    tracker installed here"."""
    names = tracker_names(report_to)  # one, `all`, or open_clip's comma list
    for name in names:
        if importlib.util.find_spec(name) is None:
            extra = ' (pip install -e ".[wandb]")' if name == "wandb" else ""
            raise TrackerUnavailableError(f"--report-to {report_to}: the {name} package is not "
                                          f"installed{extra}")
    trackers: list[GeneralTracker] = []
    if "tensorboard" in names:
        trackers.append(RunTensorBoard(TENSORBOARD_FOLDER, run_dir))
    if "wandb" in names:
        # resume="allow" with an id fixed by the run folder: a requeued job continues the same run
        trackers.append(WandBTracker(wandb_project, dir=str(run_dir), name=run_dir.name,
                                     id=wandb_run_id(run_dir), resume="allow"))
    return trackers


class RunTensorBoard(TensorBoardTracker):
    """Accelerate's TensorBoard tracker, with the run's config as hparams of the run itself: Accelerate's
    `add_hparams` writes them to a new `<timestamp>/` sub-run (one more per requeue), a second run in
    TensorBoard's list beside the real one."""

    def store_init_configuration(self, values: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(values, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()


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


# Counts that stay 0 in a healthy run (bad samples by kind, non-finite steps): not a curve of zeros, a
# curve from the first log step they are not 0
COUNTERS = ("skipped/", "nonfinite_steps")
EVAL_SET_SIZE = re.compile(r"eval/.+_n(_seen|_held_out)?")  # the same at every eval: logged when it changes


def tracker_tag(key: str) -> str:
    """The tracker name of a metrics.jsonl number: `eval/...` as it is, the rest under `train/`."""
    return key if key.startswith(EVAL_PREFIX) else f"train/{key}"


def tracker_values(numbers: dict, logged: dict) -> dict:
    """The numbers (flat_numbers, without `step`) that go to the trackers at this step, by tracker tag;
    `logged` ({key: last value sent}) is updated. All-zero counters and unchanged set sizes are held back."""
    values = {}
    for key, value in numbers.items():
        if key.startswith(COUNTERS) and value == 0 and key not in logged:
            continue
        if EVAL_SET_SIZE.fullmatch(key) and logged.get(key) == value:
            continue
        logged[key] = value
        values[tracker_tag(key)] = value
    return values


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
        self.logged: dict = {}  # what tracker_values has sent
        # The project name goes to trackers Accelerate builds from names; ours are built already.
        accelerator.init_trackers(run_dir.name, config=flat_config(config))

    def log(self, record: dict) -> None:
        record = stamped(record, time.time(), self.started)
        self.file.write(metrics_line(record))
        self.file.flush()
        numbers = flat_numbers(record)
        step = numbers.pop("step")
        self.accelerator.log(tracker_values(numbers, self.logged), step=step)

    def close(self) -> None:
        self.file.close()
        # Not accelerator.end_training(): it also destroys the process group the run still uses.
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()

# What a launch prints before its run folder exists is a few lines; the cap bounds a process that never
# gets a folder (every process but the main one): 16 processes on 2 nodes hold at most 16 MiB.
EARLY_OUTPUT_LIMIT = 1 << 20


class _Tee:
    """A text stream that also hands what is written to an OutputLog."""

    def __init__(self, stream, log: OutputLog):
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:  # a progress bar redraws its line after '\r': its last drawing is the line
            self.log.add(line.rsplit("\r", 1)[-1] + "\n")
        self.pending = self.pending.rsplit("\r", 1)[-1]
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ... of the stream it copies
        return getattr(self.stream, name)


class OutputLog:
    """`with OutputLog():` copies what this process prints (stdout and stderr, line by line, a progress
    bar's last drawing) to memory until `log_output_to(RUN/out.log)` opens the file, appending, behind
    a line that says when and how this launch started; open_clip's `out.log`, one per run folder."""

    def __init__(self):
        self.early: list[str] = []
        self.size, self.file = 0, None

    def __enter__(self) -> OutputLog:
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, self), _Tee(sys.stderr, self)
        return self

    def __exit__(self, *exc) -> None:
        for tee in (sys.stdout, sys.stderr):
            if isinstance(tee, _Tee) and tee.pending:
                self.add(tee.pending + "\n")
        sys.stdout, sys.stderr = self.saved
        if self.file is not None:
            self.file.close()

    def add(self, line: str) -> None:
        if self.file is not None:
            self.file.write(line)
            self.file.flush()
        elif self.size < EARLY_OUTPUT_LIMIT:
            self.early.append(line)
            self.size += len(line)

    def open(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.file.write(f"=== {started} {command_line()}\n" + "".join(self.early))
        self.file.flush()
        self.early = []


def log_output_to(path: Path) -> None:
    """Send the active OutputLog (if this process runs under one) to `path`."""
    log = getattr(sys.stdout, "log", None)
    if isinstance(log, OutputLog) and log.file is None:
        log.open(path)


def next_commands(run_dir: Path, train_data: str | None = None, imagenet_val: str | None = None) -> str:
    """What a person does with a finished run: where it is, how to score it and compare it. A run on the
    toy set is scored on the toy set; a run on real shards on ImageNet (the --imagenet-val folder, else
    a placeholder for the user's) and on MTEB's STS sets."""
    run = shlex.quote(str(run_dir))
    if train_data is None:
        score = ["next: score it",
                 f"  python -m benchmarks.imagenet_zeroshot --model {run} --dataset toy",
                 f"  python -m benchmarks.sts --model {run}"]
    else:
        imagenet = shlex.quote(imagenet_val) if imagenet_val else "/path/to/imagenet/val"
        score = ["next: score it on ImageNet zero-shot (an ILSVRC val folder of <wnid>/ folders) and on "
                 "MTEB's STS sets",
                 f"  python -m benchmarks.imagenet_zeroshot --model {run} --data {imagenet}",
                 f"  python -m benchmarks.sts --model {run} --source hf"]
    return "\n".join([
        f"run written to {run_dir}/ (config.json, metrics.jsonl, final_eval.json, checkpoints/, "
        "tensorboard/)",
        *score,
        "and compare it with other runs of the same recipe (another tower, other seeds):",
        f"  python -m results.report {run} runs/OTHER_RUN ... --out report/",
    ])
