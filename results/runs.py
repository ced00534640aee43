"""Reading training run folders (``runs/<name>/``) for the report, and checking that they are comparable.

A run folder holds ``config.json`` (the resolved experiment, ``recipe_sha256``, git commit, parameter
counts, FLOPs per sample), ``metrics.jsonl`` (training lines and evaluation lines) and, at the end,
``final_eval.json``. The recipe compared is ``recipe_identity`` where the run has it (the recipe with
its global batch and its data by identity, not by path), else ``experiment.recipe``. Runs that differ
only in ``recipe.seed`` are seed replicates of one *arm* (image
tower + text tower + variant + token mixing). Any other recipe difference makes runs incomparable:
:func:`recipe_differences` names the fields and :func:`refusal_message` words the one-line refusal.

Reads files only (json, pandas); no model code. Used by ``python -m results.report``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from runfolder import RunFolder
from runfolder.errors import InputError, ReportInputError  # noqa: F401 - re-exported
from runfolder.records import RecordError, final_eval_row, read_metric_rows


@dataclass
class Run:
    """One training run as the report needs it."""

    label: str  # the run folder as the user gave it (used in messages and tables)
    path: Path  # resolved run folder
    name: str
    config: dict[str, Any]
    arm_key: tuple[str, str, str, str, str]  # (image tower, text tower, variant, token mixing, text mask)
    model_name: str
    recipe: dict[str, Any]
    recipe_sha256: str
    git_commit: str
    train: pd.DataFrame  # one row per logged training step (deduplicated after resumes)
    evals: pd.DataFrame  # one row per evaluation: step, samples_seen, toy_top1, ..., toy_top1_ci_lo/hi
    final_eval: dict[str, Any]  # final_eval.json, else the last evaluation line, else {}
    notes: list[str] = field(default_factory=list)

    @property
    def seed(self) -> Any:
        return self.recipe.get("seed")

    @property
    def train_gflops(self) -> float:
        return float(self.config["flops_per_sample"]["train_gflops"])

    @property
    def params(self) -> dict[str, float]:
        return self.config.get("params") or {}

    @property
    def flops_per_sample(self) -> dict[str, float]:
        return self.config.get("flops_per_sample") or {}


def read_metrics(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training lines, evaluation lines) of a ``metrics.jsonl``, one row per step each
    (runfolder.records.read_metric_rows: a resumed run's later line for a step replaces the earlier one)."""
    try:
        rows = read_metric_rows(path)
    except RecordError as exc:
        raise ReportInputError(str(exc)) from None
    if not rows.train:
        raise ReportInputError(f"{path}: no training lines (with 'step' and 'loss'); is the run empty?")
    # numbers only: a value the trainer could not compute (null, "NaN") becomes NaN, never an object column
    train_frame = pd.DataFrame(rows.train).apply(pd.to_numeric, errors="coerce")
    eval_frame = pd.DataFrame(rows.evals).apply(pd.to_numeric, errors="coerce")
    if not eval_frame.empty and eval_frame["samples_seen"].isna().any():
        raise ReportInputError(f"{path}: an evaluation line has no 'samples_seen'")
    return train_frame, eval_frame


def load_run(run_dir: str | Path) -> Run:
    """Read one run folder; raises :class:`ReportInputError` (one line) on anything missing or malformed."""
    label = str(run_dir)
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportInputError(f"{label}: no such run folder; expected runs/<name>/ with config.json and "
                               "metrics.jsonl")
    folder = RunFolder(path)
    try:
        config = folder.read_run_config()
        experiment = config.experiment
        for key in ("image_tower", "text_tower", "variant", "recipe"):
            config.require(f"experiment.{key}")
        recipe = config.recipe
        sha = config.require("recipe_sha256")
        model_name = config.require("model_name")  # towers' name, written by the trainer
        config.train_gflops  # noqa: B018 - checked: a number
        text_mask = config.text_mask()
        train, evals = read_metrics(folder.metrics)
        final_record = folder.read_final_eval()
    except RecordError as exc:
        raise ReportInputError(str(exc)) from None
    final: dict[str, Any] = {}
    if final_record is not None:
        final = final_eval_row(final_record)
    elif not evals.empty:
        final = evals.iloc[-1].dropna().to_dict()
    text_tower = str(experiment["text_tower"])
    # token mixing only shapes a Mixer text tower; the text mask, all of them (older runs: as they read)
    token_mixing = str(experiment.get("token_mixing")) if text_tower == "mixer" else "-"
    arm_key = (str(experiment["image_tower"]), text_tower, str(experiment["variant"]), token_mixing,
               text_mask)
    data = config.data
    return Run(label=label, path=path.resolve(), name=str(data.get("name") or path.resolve().name),
               config=data, arm_key=arm_key, model_name=str(model_name),
               recipe=recipe, recipe_sha256=str(sha), git_commit=str(data.get("git_commit") or "unknown"),
               train=train, evals=evals, final_eval=final)


def load_runs(run_dirs: list[str | Path]) -> list[Run]:
    seen: dict[Path, str] = {}
    runs = []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        if run.path in seen:
            raise ReportInputError(f"{run.label}: the same run folder is given twice "
                                   f"(also as {seen[run.path]})")
        seen[run.path] = run.label
        runs.append(run)
    return runs


# --- comparability -----------------------------------------------------------------------------------

def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def recipe_differences(runs: list[Run], ignore: tuple[str, ...] = ("seed",)
                       ) -> dict[str, list[tuple[Any, str]]]:
    """{field: [(value, first run having it), ...]} for every recipe field (except ``ignore``) on which
    the runs disagree; ``recipe_sha256`` too when runs of one seed share a recipe but not its hash."""
    missing = object()
    fields = sorted({key for run in runs for key in run.recipe} - set(ignore))
    differences: dict[str, list[tuple[Any, str]]] = {}
    for name in fields:
        values: list[tuple[Any, str]] = []
        for run in runs:
            value = run.recipe.get(name, missing)
            shown = "<missing>" if value is missing else value
            if all(json.dumps(shown) != json.dumps(v) for v, _ in values):
                values.append((shown, run.label))
        if len(values) > 1:
            differences[name] = values
    if not differences:  # same recipe up to the seed: within a seed the hashes must agree too
        by_seed: dict[str, list[tuple[Any, str]]] = {}
        for run in runs:
            hashes = by_seed.setdefault(json.dumps(run.seed), [])
            if all(sha != run.recipe_sha256 for sha, _ in hashes):
                hashes.append((run.recipe_sha256, run.label))
        for hashes in by_seed.values():
            if len(hashes) > 1:
                differences["recipe_sha256"] = hashes
                break
    return differences


def describe_differences(differences: dict[str, list[tuple[Any, str]]]) -> str:
    """``lr (0.002 in runs/a vs 0.001 in runs/b), steps (...)``."""
    return ", ".join(f"{name} (" + " vs ".join(f"{_show(value)} in {label}" for value, label in values) + ")"
                     for name, values in differences.items())


def refusal_message(differences: dict[str, list[tuple[Any, str]]]) -> str:
    return (f"runs trained with different recipes: {describe_differences(differences)}; "
            "compare runs of one recipe (only the seed may differ), or pass --allow-mixed")


# --- arms -----------------------------------------------------------------------------------------

@dataclass
class Arm:
    """Seed replicates of one tower pair (and, with --allow-mixed, of one set of differing recipe fields)."""

    label: str
    runs: list[Run]

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]

    @property
    def first(self) -> Run:
        return self.runs[0]


def group_arms(runs: list[Run], differing_fields: list[str] | tuple[str, ...] = ()) -> list[Arm]:
    """Group runs into arms, in the order the arms first appear; runs within an arm sorted by seed.

    ``differing_fields`` (recipe fields that vary, under --allow-mixed) split arms further, so runs
    trained differently are never averaged together.
    """
    mixings: dict[str, set[str]] = {}
    masks: dict[str, set[str]] = {}
    for run in runs:
        mixings.setdefault(run.model_name, set()).add(run.arm_key[3])
        masks.setdefault(run.model_name, set()).add(run.arm_key[4])
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        extra = tuple(json.dumps(run.recipe.get(name)) for name in differing_fields)
        groups.setdefault((run.arm_key, extra), []).append(run)
    arms = []
    for (arm_key, _), members in groups.items():
        first = members[0]
        label = first.model_name
        # same towers read differently: say how (the text mask, then the Mixer's token mixing)
        reading = [f"{arm_key[4]} text mask"] if len(masks[first.model_name]) > 1 else []
        if len(mixings[first.model_name]) > 1:
            reading.append(f"{arm_key[3]} token mixing")
        if reading:
            label += f" ({', '.join(reading)})"
        shown_fields = [name for name in differing_fields if not (name == "text_mask" and reading)]
        if shown_fields:
            shown = ", ".join(f"{name}={_show(first.recipe.get(name))}" for name in shown_fields)
            label += f" [{shown}]"
        arms.append(Arm(label, sorted(members, key=_seed_order)))
    return arms


def _seed_order(run: Run) -> tuple:
    seed = run.seed
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def duplicate_seed_notes(arms: list[Arm]) -> list[str]:
    notes = []
    for arm in arms:
        seeds = [json.dumps(seed) for seed in arm.seeds]
        for seed in sorted(set(seeds)):
            if seeds.count(seed) > 1:
                labels = [run.label for run in arm.runs if json.dumps(run.seed) == seed]
                notes.append(f"{arm.label}: runs {', '.join(labels)} share seed {seed}; they count as "
                             "separate replicates, which understates the seed-to-seed spread")
    return notes


def one_arm_per_run(runs: list[Run]) -> list[Arm]:
    """Every run its own arm, labelled by its run name (the folder where two runs share a name): how far
    apart runs of one recipe land, for ``--arm-per-run``."""
    names = [run.name for run in runs]
    return [Arm(run.name if names.count(run.name) == 1 else run.label, [run]) for run in runs]
