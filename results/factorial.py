"""The factorial analysis of the text-mask 2x2: effects of text family, text mask and image family.

From seed-level scores (one value per run), one OLS fit per metric on the saturated cell-means design:
one mean per (image family, text family, text mask) cell. Each effect is a contrast of cell means,
averaged with equal weights over the image families where the image family is not the factor; its
standard error comes from the residual variance pooled over all cells, sqrt(s^2 * sum_c w_c^2 / n_c),
and its 95% interval is a t interval on N - (cells) degrees of freedom.

Why this model: the saturated design assumes no additivity (any factor may interact with any other),
so each contrast is exactly the difference of the cell means it names; pooling the variance over the
cells gives far more degrees of freedom than a Welch interval per pair at 3 seeds. What it assumes is
one seed-to-seed variance for every cell (the report's per-arm standard deviations show whether that
holds). Used by ``results.report`` when the runs span both text families and both masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from results.runs import Arm
from results.scores import Score
from results.tables import HEADLINE, WORD_ORDER_TASKS, Metric

FAMILIES = ("transformer", "mixer")  # contrasts read mixer - transformer
MASKS = ("causal", "caption")  # contrasts read caption - causal
# Seed-level metrics the analysis covers, where present: toy top-1 (seen and held-out classes, all),
# the val split's R@1 both ways and contrastive loss, retrieval R@1, the word-order tasks, STS.
METRIC_KEYS = ("toy_top1_seen", "toy_top1_held_out", "toy_top1", "toy_i2t_r1", "toy_t2i_r1", "toy_val_loss",
               "retrieval_i2t_r1", "retrieval_t2i_r1",
               *(f"word_order_{task.replace('-', '_')}" for task in WORD_ORDER_TASKS), "sts_avg_7")


CELL_COLUMNS = ("image_family", "text_family", "text_mask", "seed")


@dataclass(frozen=True)
class Effect:
    metric: str
    effect: str
    estimate: float
    low: float
    high: float
    df: int
    runs: int


def _metrics() -> list[Metric]:
    by_key = {metric.key: metric for metric in HEADLINE}
    return [by_key[key] for key in METRIC_KEYS]


def seed_frame(arms: list[Arm], scores: list[Score]) -> pd.DataFrame:
    """One row per run: image_family, text_family, text_mask, seed and every metric's value (NaN: none)."""
    metrics = _metrics()
    rows = []
    for arm in arms:
        for run in arm.runs:
            image, text, _, _, mask = run.arm_key
            row: dict[str, Any] = {"image_family": image, "text_family": text, "text_mask": mask,
                                   "seed": run.seed}
            for metric in metrics:
                value = metric.per_run(run, scores)
                row[metric.label] = math.nan if value is None else value
            rows.append(row)
    return pd.DataFrame(rows)


def spans_the_2x2(frame: pd.DataFrame) -> bool:
    return (not frame.empty and set(FAMILIES) <= set(frame["text_family"])
            and set(MASKS) <= set(frame["text_mask"]))


def _contrasts(images: list[str]) -> dict[str, dict[tuple[str, str, str], float]]:
    """Effect name -> {cell: weight}; cells are (image family, text family, text mask)."""
    share = 1.0 / len(images)
    contrasts: dict[str, dict[tuple[str, str, str], float]] = {}
    for mask in MASKS:
        contrasts[f"text family (mixer - transformer), {mask} mask"] = {
            **{(i, "mixer", mask): share for i in images},
            **{(i, "transformer", mask): -share for i in images}}
    for family in FAMILIES:
        contrasts[f"text mask (caption - causal), {family} text"] = {
            **{(i, family, "caption"): share for i in images},
            **{(i, family, "causal"): -share for i in images}}
    contrasts["text family x mask interaction"] = {
        (i, family, mask): share * (1 if family == "mixer" else -1) * (1 if mask == "caption" else -1)
        for i in images for family in FAMILIES for mask in MASKS}
    if set(FAMILIES) <= set(images):
        contrasts["image family (mixer - transformer)"] = {
            (image, family, mask): (1 if image == "mixer" else -1) / 4
            for image in FAMILIES for family in FAMILIES for mask in MASKS}
    return contrasts


def effects(frame: pd.DataFrame, metric: str) -> list[Effect]:
    """Every effect of the 2x2 on `metric` (a column of `frame`), with its 95% t interval."""
    data = frame.dropna(subset=[metric])
    cells = data.groupby(["image_family", "text_family", "text_mask"])[metric]
    means, counts = cells.mean(), cells.count()
    residual = float(((data[metric] - cells.transform("mean")) ** 2).sum())
    df = len(data) - len(means)
    scale = math.sqrt(residual / df) if df > 0 else math.nan
    t = stats.t.ppf(0.975, df) if df > 0 else math.nan
    # the image families that have every text family x mask cell
    images = [image for image in sorted(set(data["image_family"]))
              if all((image, f, m) in means.index for f in FAMILIES for m in MASKS)]
    if not images:
        return []
    found = []
    for name, weights in _contrasts(images).items():
        if any(cell not in means.index for cell in weights):
            continue
        estimate = float(sum(w * means[cell] for cell, w in weights.items()))
        error = scale * math.sqrt(sum(w * w / counts[cell] for cell, w in weights.items()))
        found.append(Effect(metric, name, estimate, estimate - t * error, estimate + t * error, df,
                            len(data)))
    return found


def effects_frame(arms: list[Arm], scores: list[Score]) -> pd.DataFrame:
    """The report's table: one row per metric x effect (estimate, 95% interval, residual df, runs)."""
    frame = seed_frame(arms, scores)
    rows = []
    if spans_the_2x2(frame):
        for metric in [c for c in frame.columns if c not in CELL_COLUMNS]:
            for effect in effects(frame, metric):
                interval = "–" if np.isnan(effect.low) else f"[{effect.low:+.1f}, {effect.high:+.1f}]"
                rows.append({"metric": metric, "effect": effect.effect, "estimate": f"{effect.estimate:+.2f}",
                             "95% interval": interval, "residual df": effect.df, "runs": effect.runs})
    return pd.DataFrame(rows)
