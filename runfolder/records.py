"""The contents of a run folder's files, written and read here only: `config.json` (`ConfigRecord` to
write, `RunConfig` to read), `metrics.jsonl` (`metrics_line`, `read_metric_rows`) and
`final_eval.json` (`final_eval_record`, `read_final_eval`). Standard library only: the trainer writes
through it, the runners and the report read through it.

    from runfolder.records import read_config, read_metric_rows
    config = read_config("runs/mixer-w96-seed0/config.json")   # RunConfig: .recipe, .require("a.b")
    rows = read_metric_rows("runs/mixer-w96-seed0/metrics.jsonl")  # .train, .evals: one row per step

A reader raises `RecordError` (a ValueError) with one line naming the file (and line) and what was
expected. Older runs lack later keys: every key a reader does not `require` may be missing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runfolder.atomic import atomic_write_text
from runfolder.errors import InputError
from runfolder.vocabulary import CI_SUFFIX, EVAL_PREFIX, legacy_text_reading


class RecordError(InputError):
    """A run-folder file is missing or malformed; the message is one line naming the file."""


# --- JSON ---------------------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), tuples -> lists, Paths -> str, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any] | list[Any]) -> Path:
    """Write ``data`` as strict JSON (NaN -> null), indented, atomically: a reader never sees half a file."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file's contents; `what` it should be goes into the one-line error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: missing; expected the {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc}); expected the {what}") from None


# --- config.json --------------------------------------------------------------------------------------

def flops_per_sample(image_gflops: float, text_gflops: float) -> dict[str, float]:
    # forward + backward = 3 x forward, the usual estimate
    return {"image_gflops": image_gflops, "text_gflops": text_gflops,
            "train_gflops": 3 * (image_gflops + text_gflops)}


@dataclass(frozen=True)
class ConfigRecord:
    """What the trainer writes to config.json, in the file's key order."""

    name: str
    model_name: str
    experiment: dict[str, Any]  # launch.config.experiment_dict: towers, variant, recipe
    recipe_sha256: str
    recipe_identity: dict[str, Any]  # the recipe at its scale: global batch, data by identity
    run_options: dict[str, Any]
    command: str
    git_commit: str | None
    git_diff_sha256: str | None  # sha256 of `git diff HEAD --binary` on a dirty tree (runfolder.code_version)
    versions: dict[str, str | None]
    world_size: int
    global_batch_size: int
    device: str
    torch_threads: int
    cpu_capability: str
    precision: dict[str, Any]  # requested, resolved, why
    device_settings: dict[str, Any]
    params: dict[str, int]  # image_params, text_params, total_params
    flops_per_sample: dict[str, float]  # flops_per_sample()
    resumed_from: Any = None
    branched_from: Any = None

    def to_json(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def write(self, path: str | os.PathLike) -> dict[str, Any]:
        data = self.to_json()
        write_json(path, data)
        return data


CONFIG_WHAT = "run's config.json (written by launch/train.py)"


@dataclass(frozen=True)
class RunConfig:
    """A run's config.json as read back; `data` is the whole object (older runs lack later keys)."""

    path: Path
    data: dict[str, Any]

    def get(self, dotted: str, default: Any = None) -> Any:
        """`get("experiment.recipe.seed")`: the nested value, or `default` where a level is missing."""
        value: Any = self.data
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value

    def require(self, dotted: str) -> Any:
        missing = object()
        value = self.get(dotted, missing)
        if value is missing:
            raise RecordError(f"{self.path}: missing key '{dotted}'; expected a trainer config.json "
                              "(launch/train.py writes it)")
        return value

    @property
    def experiment(self) -> dict[str, Any]:
        return self.require("experiment")

    @property
    def recipe(self) -> dict[str, Any]:
        """What trained the model at its scale (global batch, data by identity) where the run records it,
        else the experiment's recipe."""
        recipe = self.data.get("recipe_identity", self.require("experiment.recipe"))
        if not isinstance(recipe, dict):
            raise RecordError(f"{self.path}: 'experiment.recipe' and 'recipe_identity' must be objects")
        return recipe

    @property
    def train_gflops(self) -> float:
        gflops = self.require("flops_per_sample.train_gflops")
        if not isinstance(gflops, (int, float)) or not math.isfinite(gflops):
            raise RecordError(f"{self.path}: 'flops_per_sample.train_gflops' must be a number")
        return float(gflops)

    def text_mask(self) -> str:
        """How the text tower read its captions; a run recorded before the text mask, as it read them."""
        experiment = self.experiment
        mask = self.recipe.get("text_mask") or experiment["recipe"].get("text_mask")
        return str(mask or legacy_text_reading(str(experiment["text_tower"]),
                                               experiment.get("token_mixing"))[0])


def read_config(path: str | os.PathLike) -> RunConfig:
    data = read_json(path, CONFIG_WHAT)
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return RunConfig(Path(path), data)


# --- metrics.jsonl ------------------------------------------------------------------------------------

# The training line's numbers the report reads (a line may have more: skipped counts, time, ...)
TRAIN_KEYS = ("step", "samples_seen", "loss", "lr", "logit_scale", "samples_per_s", "data_wait_frac",
              "grad_norm", "nonfinite_steps")


def stamped(record: dict[str, Any], now: float, started: float) -> dict[str, Any]:
    """`record` (a training or an evaluation line) with `time` (ISO 8601 wall clock, UTC) and
    `elapsed_s` (seconds since this launch started): what every metrics.jsonl line carries."""
    wall = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="seconds")
    return {**record, "time": wall, "elapsed_s": round(now - started, 3)}


def metrics_line(record: dict[str, Any]) -> str:
    """One metrics.jsonl line (a `stamped` record), keys sorted."""
    return json.dumps(record, sort_keys=True) + "\n"


def is_eval_line(record: dict[str, Any]) -> bool:
    return any(key.startswith(EVAL_PREFIX) for key in record)


@dataclass(frozen=True)
class MetricRows:
    """metrics.jsonl as rows, one per step each, in step order; a resumed run re-logs the steps after its
    checkpoint, so a later line for the same step replaces the earlier one."""

    train: list[dict[str, Any]]  # TRAIN_KEYS plus skipped_total (the bad samples skipped, all kinds)
    evals: list[dict[str, Any]]  # step, samples_seen, <set>_<key> numbers, <set>_<key>_ci_lo/hi


def read_metric_lines(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, parsed line) of every non-blank metrics.jsonl line, as written."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RecordError(f"{path}: missing; expected the run's metrics.jsonl (one JSON object per "
                          "line)") from None
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc})") from None
    parsed = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}:{number}: malformed line ({exc.msg}); expected one JSON "
                              "object per line") from None
    return parsed


def read_metric_rows(path: str | os.PathLike) -> MetricRows:
    path = Path(path)
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    for number, record in read_metric_lines(path):
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise RecordError(f"{path}:{number}: expected a JSON object with an integer 'step'")
        if is_eval_line(record):
            row = {"step": record["step"], "samples_seen": record.get("samples_seen")}
            for key, value in record.items():
                if not key.startswith(EVAL_PREFIX):
                    continue
                name = key[len(EVAL_PREFIX):]
                if isinstance(value, (list, tuple)) and len(value) == 2 and name.endswith(CI_SUFFIX):
                    row[f"{name[:-len(CI_SUFFIX)]}_ci_lo"], row[f"{name[:-len(CI_SUFFIX)]}_ci_hi"] = value
                elif isinstance(value, (int, float)) or value is None:  # numbers only
                    row[name] = value
            evals[record["step"]] = row
        elif "loss" in record:
            row = {key: record.get(key) for key in TRAIN_KEYS}
            skipped = record.get("skipped") or {}
            row["skipped_total"] = sum(v for v in skipped.values() if isinstance(v, (int, float)))
            train[record["step"]] = row
        else:
            raise RecordError(f"{path}:{number}: neither a training line (with 'loss') nor an "
                              f"evaluation line (with '{EVAL_PREFIX}...' keys)")
    return MetricRows(train=[train[step] for step in sorted(train)],
                      evals=[evals[step] for step in sorted(evals)])


# --- final_eval.json ----------------------------------------------------------------------------------

def final_eval_record(step: int, final: dict[str, Any]) -> dict[str, Any]:
    """final_eval.json: the step, then the last evaluation's `eval/<set>_<key>` values."""
    return {"step": step, **final}


def read_final_eval(path: str | os.PathLike) -> dict[str, Any] | None:
    """final_eval.json as written, or None when the run has none (it did not finish)."""
    if not Path(path).is_file():
        return None
    data = read_json(path, "run's final evaluation")
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return data


def final_eval_row(record: dict[str, Any]) -> dict[str, Any]:
    """final_eval.json's values without the `eval/` prefix, each `<metric>_ci95` pair split into
    `<metric>_ci_lo` and `<metric>_ci_hi` (the names of the evaluation rows); other keys kept."""
    row = {key[len(EVAL_PREFIX):] if key.startswith(EVAL_PREFIX) else key: value
           for key, value in record.items()}
    for key in [key for key in row if key.endswith(CI_SUFFIX)]:  # toy_top1_ci95, imagenet_top1_ci95
        if isinstance(row[key], list) and len(row[key]) == 2:
            row[f"{key[:-len(CI_SUFFIX)]}_ci_lo"], row[f"{key[:-len(CI_SUFFIX)]}_ci_hi"] = row.pop(key)
    return row
