"""Reading the benchmarks' score files and deciding which run (or arm) each belongs to.

A score file is ``<scores-dir>/<benchmark>/<model-id>.json`` as ``benchmarks/provenance.py`` writes it:
{benchmark, benchmark_version, model_id, model {..., run_dir?, run_name?, checkpoint?, step?},
recipe_sha256, git_commit, versions, date, command, settings, metrics}.

Ownership (:func:`assign`): a score belongs to a run when ``model.run_dir`` or the checkpoint's run
folder resolves to the run folder, else when ``model.run_name`` / ``model_id`` names the run. Throughput
scores time an architecture, not a checkpoint, so they belong to every arm with that ``model_name``.
A score from another run is left out; a score from no run at all (sentence-transformers, open_clip,
random weights) is a reference row. A score whose ``recipe_sha256`` differs from its run's is left out
(it cannot describe that run); of several scores for one run and benchmark the latest step is used,
and the earlier steps of a zero-shot benchmark are points of its curve (:func:`add_checkpoint_evals`).
A file name's parts after ``__`` name the measurement (data set, templates, subset): the runs are compared
on the measurement most of them have (:func:`shared_measurement`); a run's other measurements of that
benchmark (ImageNetV2 beside ImageNet val, a ``--limit`` subset) are listed, never put in the headline.

Reads files only; used by ``python -m results.report``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from results.runs import Arm, ReportInputError, Run
from runfolder.records import RecordError
from runfolder.score_records import is_clip_benchmark_result, read_score_json, score_from_json

ZERO_SHOT = ("imagenet_zeroshot", "toy_zeroshot")
RUN_SOURCES = ("run", "checkpoint")


@dataclass
class Score:
    path: Path
    benchmark: str
    model_id: str
    model: dict[str, Any]
    recipe_sha256: str | None
    git_commit: str | None
    date: str | None
    settings: dict[str, Any]
    metrics: dict[str, Any]
    run: Run | None = None  # owner run (per-checkpoint benchmarks)
    arms: list[Arm] = field(default_factory=list)  # owner arms (throughput)
    status: str = "reference"  # run | arm | reference | other run | recipe mismatch | superseded | other
    #                             measurement

    # What was measured beyond the model: our file name's parts after ``__`` (``imagenet-val``,
    # ``imagenetv2-matched-frequency__templates-simple``, ``limit100``), "" for the default;
    # ``clip_benchmark-<dataset>`` for a CLIP_benchmark result
    measurement: str = ""

    @property
    def step(self) -> int | None:
        step = self.model.get("step")
        return step if isinstance(step, int) else None

    @property
    def used(self) -> bool:
        return self.status in ("run", "arm", "reference", "curve point")

    @property
    def owner(self) -> str:
        if self.run is not None:
            return self.run.label
        if self.arms:
            return ", ".join(arm.label for arm in self.arms)
        return "reference" if self.status == "reference" else "-"


# CLIP_benchmark's ImageNet-1k data set names: its results count as our imagenet_zeroshot benchmark
CLIP_BENCHMARK_IMAGENET = ("imagenet1k", "imagenet1k-unverified", "wds/imagenet1k")
CLIP_BENCHMARK_METRICS = {"acc1": "top1", "acc5": "top5", "mean_per_class_recall": "mean_per_class_recall"}


def read_clip_benchmark(path: Path, record: dict) -> Score:
    """A result file of CLIP_benchmark (or `python -m benchmarks.clip_benchmark`): {dataset, model,
    pretrained, task, metrics (fractions)} as a Score in percent. `pretrained` is the checkpoint the
    wrapper handed over, so the score belongs to that checkpoint's run (step from its file name)."""
    dataset, task = str(record["dataset"]), str(record["task"])
    imagenet = task == "zeroshot_classification" and dataset in CLIP_BENCHMARK_IMAGENET
    metrics = {CLIP_BENCHMARK_METRICS.get(k, k) if imagenet else k: 100 * v
               for k, v in record["metrics"].items() if isinstance(v, (int, float))}
    pretrained = str(record.get("pretrained") or "")
    model: dict[str, Any] = {"checkpoint": pretrained, "source": "checkpoint"} if pretrained.endswith(".pt") \
        else {"pretrained": pretrained}
    step = re.search(r"step_(\d+)", Path(pretrained).stem)
    if step:
        model["step"] = int(step.group(1))
    return Score(path=path, benchmark="imagenet_zeroshot" if imagenet else f"clip_benchmark_{task}",
                 model_id=str(record.get("model") or path.stem), model=model, recipe_sha256=None,
                 git_commit=None, date=None, settings={"clip_benchmark_dataset": dataset}, metrics=metrics,
                 measurement=f"clip_benchmark-{dataset.replace('/', '-')}")


def read_score(path: Path) -> Score:
    try:
        record = read_score_json(path)
        if is_clip_benchmark_result(record):
            return read_clip_benchmark(path, record)
        read = score_from_json(path, record)
    except RecordError as exc:
        raise ReportInputError(str(exc)) from None
    return Score(path=path, benchmark=read.benchmark, model_id=read.model_id, model=read.model,
                 recipe_sha256=read.recipe_sha256, git_commit=read.git_commit, date=read.date,
                 settings=read.settings, metrics=read.metrics, measurement=read.measurement)


def load_scores(scores_dir: str | Path | None, required: bool = False) -> list[Score]:
    """Every ``<scores_dir>/<benchmark>/*.json`` (ours, or CLIP_benchmark's results in any such folder,
    e.g. ``<scores_dir>/clip_benchmark/``); a missing folder is an error only when ``required``."""
    if scores_dir is None:
        return []
    root = Path(scores_dir)
    if not root.is_dir():
        if required:
            raise ReportInputError(f"--scores {scores_dir}: no such folder; expected <dir>/<benchmark>/"
                                   "<model-id>.json as the benchmarks write them")
        return []
    return [read_score(path) for path in sorted(root.glob("*/*.json"))]


def _same_path(stored: Any, run: Run) -> bool:
    if not isinstance(stored, str) or not stored:
        return False
    try:
        return Path(stored).resolve() == run.path
    except OSError:
        return False


def owner_run(score: Score, runs: list[Run]) -> Run | None:
    for run in runs:
        checkpoint = score.model.get("checkpoint")
        if _same_path(score.model.get("run_dir"), run) or (
                isinstance(checkpoint, str) and _same_path(str(Path(checkpoint).parent.parent), run)):
            return run
    by_name = [run for run in runs if score.model.get("run_name") == run.name
               or score.model_id in (run.name, run.path.name)]
    return by_name[0] if len(by_name) == 1 else None


def _order(score: Score) -> tuple:
    return (score.step if score.step is not None else -1, score.date or "")


def assign(scores: list[Score], runs: list[Run], arms: list[Arm]) -> list[str]:
    """Set each score's owner and status; returns notes on the scores left out."""
    notes = []
    for score in scores:
        if score.benchmark == "throughput":
            architecture = score.model.get("architecture")
            score.arms = [arm for arm in arms if arm.first.model_name == architecture]
            score.status = "arm" if score.arms else "other run"
            if not score.arms:
                notes.append(f"{score.path}: throughput of {architecture}, which no compared run trains; "
                             "left out")
            continue
        run = owner_run(score, runs)
        if run is None:
            if score.model.get("source") in RUN_SOURCES:
                score.status = "other run"
                notes.append(f"{score.path}: scores {score.model_id}, which is not one of the compared runs; "
                             "left out")
            continue
        score.run = run
        if score.recipe_sha256 and score.recipe_sha256 != run.recipe_sha256:
            score.status = "recipe mismatch"
            notes.append(f"{score.path}: recipe_sha256 {score.recipe_sha256[:12]} differs from run "
                         f"{run.label}'s {run.recipe_sha256[:12]}; left out")
        else:
            score.status = "run"
    notes += shared_measurement([score for score in scores if score.status == "run"])
    latest: dict[tuple[str, str], Score] = {}
    for score in scores:
        if score.status != "run":
            continue
        key = (score.run.label, score.benchmark)
        if key in latest and _order(latest[key]) >= _order(score):
            score.status = "superseded"
        else:
            if key in latest:
                latest[key].status = "superseded"
            latest[key] = score
    for score in scores:
        if score.status == "superseded" and score.benchmark in ZERO_SHOT and score.step is not None:
            score.status = "curve point"  # an earlier saved step (--every-checkpoint): a point of the curve
        elif score.status == "superseded":
            notes.append(f"{score.path}: a later score of {score.run.label} on {score.benchmark} "
                         "is used instead")
    return notes


SUBSET_PARTS = ("limit", "templates-", "sets-")  # parts that make a measurement a subset or a variant


def shared_measurement(owned: list[Score]) -> list[str]:
    """For each benchmark, keep the measurement most runs have (ties: the one with fewer subset parts, then
    ImageNet val, then the shorter name); mark the others "other measurement"; returns notes on them."""
    notes = []
    for benchmark in sorted({score.benchmark for score in owned}):
        of_benchmark = [score for score in owned if score.benchmark == benchmark]
        runs_with: dict[str, set[str]] = {}
        for score in of_benchmark:
            runs_with.setdefault(score.measurement, set()).add(score.run.label)

        chosen = min(runs_with, key=lambda m, counts=runs_with: (
            -len(counts[m]), sum(part in m for part in SUBSET_PARTS), "imagenet-val" not in m, len(m)))
        for score in of_benchmark:
            if score.measurement != chosen:
                score.status = "other measurement"
                notes.append(f"{score.path}: {benchmark} measured as {score.measurement or 'the default'}, "
                             f"not {chosen or 'the default'} as compared; listed in scores.csv only")
    return notes


def add_checkpoint_evals(scores: list[Score], runs: list[Run]) -> None:
    """Each run's zero-shot scores of saved steps (``--every-checkpoint``) as evaluation rows of the run
    (``imagenet_top1`` ... at the step's samples seen), where its own in-training evals lack them."""
    for run in runs:
        rows = []
        for score in scores:
            if score.run is not run or score.step is None or score.status not in ("run", "curve point") \
                    or score.benchmark not in ZERO_SHOT:
                continue
            name = "imagenet" if score.benchmark == "imagenet_zeroshot" else "toy"
            if f"{name}_top1" in run.evals.columns and score.step in set(run.evals["step"]):
                continue  # the run evaluated this step itself
            seen = score.model.get("samples_seen")
            if not isinstance(seen, int):
                seen = score.step * int(run.config.get("global_batch_size") or 0) or None
            ci = score.metrics.get("top1_ci95")
            ci = ci if isinstance(ci, list) and len(ci) == 2 else [None, None]
            rows.append({"step": score.step, "samples_seen": seen, f"{name}_top1": score.metrics.get("top1"),
                         f"{name}_top5": score.metrics.get("top5"), f"{name}_top1_ci_lo": ci[0],
                         f"{name}_top1_ci_hi": ci[1]})
        if rows:
            extra = pd.DataFrame(rows).apply(pd.to_numeric, errors="coerce").groupby("step").last()
            merged = run.evals.set_index("step") if not run.evals.empty else pd.DataFrame(index=extra.index)
            run.evals = merged.combine_first(extra).reset_index().sort_values("step", ignore_index=True)


def run_score(scores: list[Score], run: Run, benchmark: str) -> Score | None:
    for score in scores:
        if score.status == "run" and score.run is run and score.benchmark == benchmark:
            return score
    return None


def arm_throughput(scores: list[Score], arm: Arm) -> list[Score]:
    return [score for score in scores if score.status == "arm" and arm in score.arms]


def own_row(score: Score) -> dict[str, Any] | None:
    """The throughput row of the timed architecture (not the open_clip reference row)."""
    rows = score.metrics.get("rows") or []
    for row in rows:
        if row.get("model") == score.model.get("architecture"):
            return row
    return rows[0] if rows else None


# --- flattening every score into table rows ---------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _row(metric: str, value: Any, ci: Any = None, n: Any = None,
         subject: str | None = None) -> dict[str, Any]:
    low, high = (ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None))
    return {"metric": metric, "value": _number(value), "ci95_low": _number(low), "ci95_high": _number(high),
            "n": n, "subject": subject}


def metric_rows(score: Score) -> list[dict[str, Any]]:
    """One row per number in a score file: metric, value, ci95_low/high (where it has one), n, subject."""
    metrics = score.metrics
    if score.benchmark in ZERO_SHOT:
        n = metrics.get("n")
        rows = [_row("top-1 (%)", metrics.get("top1"), metrics.get("top1_ci95"), n)]
        for key, label in (("top5", "top-5 (%)"), ("mean_per_class_recall", "mean per-class recall (%)"),
                           ("colour_acc", "colour accuracy (%)"), ("shape_acc", "shape accuracy (%)")):
            if key in metrics:
                rows.append(_row(label, metrics[key], n=n))
        return rows
    if score.benchmark == "sts":
        rows = []
        for name, values in (metrics.get("sets") or {}).items():
            rows.append(_row(f"{name} Spearman x100", values.get("cosine_spearman"), n=values.get("n")))
            rows.append(_row(f"{name} Pearson x100", values.get("cosine_pearson"), n=values.get("n")))
        rows.append(_row("avg (7 sets) Spearman x100", metrics.get("avg_7")))
        rows.append(_row("avg (6 sets, seed paper) Spearman x100", metrics.get("avg_6_seed")))
        return rows
    if score.benchmark == "throughput":
        rows = []
        for row in metrics.get("rows") or []:
            for mode in ("train", "infer"):
                if f"{mode}_samples_per_s" in row:
                    rows.append(_row(f"{mode} samples/s", row[f"{mode}_samples_per_s"],
                                     n=score.settings.get("steps"), subject=row.get("model")))
        for key, value in (metrics.get("ratios") or {}).items():
            rows.append(_row(f"ratio ours/reference: {key}", value))
        return rows
    if score.benchmark == "retrieval":
        return [_row(f"{key} (%)", value, n=metrics.get("images")) for key, value in metrics.items()
                if "@" in key]
    return [_row(key, value) for key, value in _flatten(metrics) if _number(value) is not None]


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [pair for key, value in tree.items() for pair in _flatten(value, f"{prefix}{key}/")]
    return [(prefix.rstrip("/"), tree)]


def score_note(score: Score) -> str:
    """Settings that change what a number means (a subset of the data, a non-final checkpoint)."""
    notes = []
    limit = score.settings.get("limit")
    if limit is not None:
        notes.append(f"limit {limit}")
    if score.run is not None and score.step is not None:
        final_step = int(score.run.train["step"].max())
        if score.step != final_step:
            notes.append(f"step {score.step} of {final_step}")
    if score.benchmark == "throughput":
        metrics = score.metrics
        notes.append(f"batch {metrics.get('batch_size')}, {metrics.get('device_name')}, "
                     f"{metrics.get('precision')}")
    if not score.used:
        notes.append(f"not used: {score.status}")
    return "; ".join(notes)
