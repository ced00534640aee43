"""A run placed on the published curve of its model and data, so a broken baseline is caught: the one
owner of that rule, torch-free, read by training's end-of-run line and by the report (results.anchors).

A run has a published counterpart when it is a Transformer CLIP (both towers `transformer`) of an
open_clip size the table has (B/32 -> ViT-B-32) trained on DataComp or LAION-family shards and scored
on ImageNet: its anchor is the published top-1 of that model on that data (runfolder.published_table) at
the run's samples seen, linear in log samples between published points. Past the last published point
the last value is used, as a lower bound (error only falls with samples seen); before the first, no
anchor. The Transformer arm is flagged when it is more than the margin under it. The toy, a Mixer arm,
or data the table does not cover get no anchor, and the reason says why.

    from runfolder.anchor import anchor_run
    print(anchor_run(config, imagenet_top1).summary())   # config.json's dict, the run's ImageNet top-1
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from runfolder import RunFolder
from runfolder.published_table import PACKAGED, load_table, select, value_at
from runfolder.vocabulary import eval_key

# Flag a Transformer arm more than max(3 points, 20% of the published value) under the published curve: a
# published row is the best run over its learning rates and a replication on other shards (LAION-400M
# against Re-LAION-2B) or another harness moves a few points; a broken recipe misses by tens (2.3% vs 60%).
MARGIN_POINTS = 3.0
MARGIN_SHARE = 0.20
# The table's curve for a run's data, chosen by a word of its shard path (first match wins).
DATA_WORDS = (("datacomp_small", "datacomp_pool_basic"), ("datacomp/small", "datacomp_pool_basic"),
              ("datacomp_medium", "datacomp_pool_basic"), ("datacomp/medium", "datacomp_pool_basic"),
              ("commonpool", "datacomp_pool_none"), ("datacomp", "datacomp_1b"), ("laion", "relaion2b-en"))
SCHEDULES = {"cosine": "cosine", "constant": "const"}


@dataclass(frozen=True)
class Anchor:
    run: str
    score: float | None  # the run's ImageNet zero-shot top-1 (percent)
    published: float | None  # the published top-1 at the run's samples seen
    samples_seen: int
    curve: str  # which published curve, or "" with no counterpart
    reason: str  # why there is no anchor, or how the published value was read
    margin: float = 0.0
    dataset: str = ""  # the published curve's dataset

    @property
    def gap(self) -> float | None:
        """Published minus the run's score (points; > 0: the run is under the curve)."""
        return None if self.score is None or self.published is None else self.published - self.score

    @property
    def flagged(self) -> bool:
        return self.gap is not None and self.gap > self.margin

    def warning(self) -> str:
        return (f"this baseline is {self.gap:.1f} points under open CLIP at the same samples seen "
                f"({self.run}: {self.score:.1f}% vs {self.published:.1f}%, {self.curve} at "
                f"{self.samples_seen:,}; margin {self.margin:.1f}): check the recipe before reading the "
                "comparison")

    def summary(self) -> str:
        """One line for the report and training's end-of-run summary."""
        if self.published is None or self.score is None:
            return f"anchor: {self.run} has no published counterpart: {self.reason}"
        if self.flagged:
            return "WARNING: " + self.warning()
        return (f"anchor: {self.run} scores {self.score:.1f}% against open CLIP's {self.published:.1f}% "
                f"({self.curve} at {self.samples_seen:,} samples seen, {self.reason}; within the "
                f"{self.margin:.1f}-point margin)")


def margin_for(published: float) -> float:
    return max(MARGIN_POINTS, MARGIN_SHARE * published)


def data_name(train_data) -> str | None:
    """The published dataset for a run's data identity, None for the toy or data no word names."""
    if not train_data or isinstance(train_data, dict) and "toy_seed" in train_data:
        return None
    text = json.dumps(train_data).lower() if not isinstance(train_data, str) else train_data.lower()
    return next((name for word, name in DATA_WORDS if word in text), None)


def anchor_run(config: dict, score: float | None, table: Path = PACKAGED, dataset: str | None = None,
               rows=None) -> Anchor:
    """The anchor of a run from its config.json (dict) and ImageNet top-1; `dataset` overrides the
    curve chosen from the shard path."""
    experiment = config.get("experiment", {})
    recipe = config.get("recipe_identity") or experiment.get("recipe", {})
    name = config.get("name", "run")
    samples = int(recipe.get("global_batch_size") or config.get("global_batch_size") or 0) * int(
        recipe.get("steps") or 0)

    def none(reason: str) -> Anchor:
        return Anchor(name, score, None, samples, "", reason)

    towers = (experiment.get("image_tower"), experiment.get("text_tower"))
    if towers != ("transformer", "transformer"):
        return none(f"towers {towers[0]}/{towers[1]}: the published runs are Transformer CLIPs (the "
                    "Transformer arm of a comparison carries the anchor)")
    dataset = dataset or data_name(recipe.get("train_data"))
    if dataset is None:
        data = recipe.get("train_data")
        return none("the toy data set: no published run trains on it" if not data or "toy_seed" in str(data)
                    else f"data {data} is neither DataComp nor LAION-family")
    model = "ViT-" + str(experiment.get("variant", "")).replace("/", "-")
    schedule = SCHEDULES.get(recipe.get("lr_schedule", "cosine"), "cosine")
    rows = load_table(table) if rows is None else rows
    found = select(rows, family="clip", model=model, dataset=dataset, benchmark="imagenet1k")
    if not found:
        return none(f"no published {model} CLIP on {dataset}")
    curve_rows = [r for r in found if r.schedule == schedule] or found
    used = curve_rows[0].schedule
    curve = f"{model} on {dataset} ({used}, {curve_rows[0].source})"
    if score is None:
        return Anchor(name, None, None, samples, curve, "the run has no ImageNet zero-shot score "
                      "(--imagenet-val)")
    first, last = min(r.samples_seen for r in curve_rows), max(r.samples_seen for r in curve_rows)
    if samples < first:
        return Anchor(name, score, None, samples, curve, f"{samples:,} samples seen is under the published "
                      f"range ({first:,} to {last:,})")
    how = "interpolated on log samples" if samples <= last else (
        f"the last published point, {last:,}: a lower bound past it")
    published = value_at(curve_rows, min(samples, last))
    if used != schedule:
        how += f"; no {schedule} curve, the {used} one"
    return Anchor(name, score, published, samples, curve, how, margin_for(published), dataset)


def anchor_run_dir(run_dir: str | Path, table: Path = PACKAGED) -> Anchor:
    """The anchor of a finished run folder (config.json + final_eval.json's eval/imagenet_top1)."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    config = folder.read_config()
    final = folder.read_final_eval()
    score = final.get(eval_key("imagenet", "top1")) if final is not None else None
    return anchor_run(config, score, table)


def end_of_run_line(run_dir: str | Path) -> str:
    """Training's end-of-run line: the run's in-training ImageNet score against the published curve. Never
    raises: a finished run must not fail over its anchor."""
    try:
        return anchor_run_dir(run_dir).summary()
    except (OSError, ValueError, KeyError) as error:  # ReportInputError is a ValueError
        return f"anchor: not available ({error})"
