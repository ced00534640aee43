"""The factorial analyses of the tower 2x2s: image family x text family (at each text mask) and text
family x text mask (x image family), from seed-level scores (one value per run).

Each effect is a contrast of cell means, one cell per (image family, text family, text mask), so the
saturated design assumes no additivity: a contrast is exactly the difference of the cell means it names.
Its 95% interval is Welch's: the variance of every cell mean is that cell's own, s_c^2 / n_c (HC2, the
unbiased one for cell means), and the degrees of freedom Welch-Satterthwaite's per contrast, because
the cells' seed-to-seed variances differ up to some 300-fold (the tiny ViT image tower is far noisier
than the Mixer's), so one pooled variance would be too wide for the quiet cells and too narrow for the
noisy ones. Where the cells share seeds the same contrast is also given paired: per seed over the seeds
every cell of it has, a one-sample t interval on n - 1 df.

The towers 2x2 (one text mask, both families for each tower) decomposes the headline gap, both towers
Mixer minus both Transformer, into the image family's effect within each text family, the text family's
within each image family and their interaction (the text family's effect in the Mixer image tower minus
that in the ViT one). Used by ``results.report`` when the runs form either 2x2: docs/text-mask.md.
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
METHOD = ("From the seed-level scores, each effect is a contrast of cell means (one cell per image family x "
          "text family x text mask); its 95% interval is Welch's, each cell with its own seed variance and "
          "Welch-Satterthwaite degrees of freedom, and where the cells share seeds the paired interval over "
          "the seeds they share is beside it (results/factorial.py, docs/text-mask.md). Differences read "
          "mixer - transformer and caption - causal; an interaction is the second factor's effect at the "
          "Mixer level of the first minus that at the Transformer (or causal) level.")


CELL_COLUMNS = ("image_family", "text_family", "text_mask", "seed")
Cell = tuple[str, str, str]  # (image family, text family, text mask)


@dataclass(frozen=True)
class Effect:
    metric: str
    effect: str
    estimate: float
    low: float  # Welch 95% interval over every run of the contrast's cells
    high: float
    df: float  # Welch-Satterthwaite degrees of freedom
    runs: int  # runs in the contrast's cells
    paired_estimate: float = math.nan  # the same contrast per seed, over the seeds every cell has
    paired_low: float = math.nan
    paired_high: float = math.nan
    paired_seeds: int = 0


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


def _towers_contrasts(mask: str) -> dict[str, dict[Cell, float]]:
    """The image family x text family 2x2 at one text mask: the headline gap and its decomposition."""
    def cell(image: str, text: str) -> Cell:
        return (image, text, mask)
    sign = {"mixer": 1.0, "transformer": -1.0}
    contrasts = {f"both towers (mixer - transformer), {mask} mask":
                 {cell("mixer", "mixer"): 1.0, cell("transformer", "transformer"): -1.0}}
    for text in FAMILIES:
        contrasts[f"image family (mixer - transformer), {text} text, {mask} mask"] = {
            cell(image, text): sign[image] for image in FAMILIES}
    for image in FAMILIES:
        contrasts[f"text family (mixer - transformer), {image} image, {mask} mask"] = {
            cell(image, text): sign[text] for text in FAMILIES}
    contrasts[f"text family (mixer - transformer), {mask} mask"] = {  # as in the text-mask 2x2
        cell(image, text): sign[text] / 2 for image in FAMILIES for text in FAMILIES}
    contrasts[f"image family (mixer - transformer), {mask} mask, mean over text families"] = {
        cell(image, text): sign[image] / 2 for image in FAMILIES for text in FAMILIES}
    contrasts[f"image x text family interaction, {mask} mask"] = {
        cell(image, text): sign[image] * sign[text] for image in FAMILIES for text in FAMILIES}
    return contrasts


def _mask_contrasts(images: list[str]) -> dict[str, dict[Cell, float]]:
    """The text family x text mask 2x2, averaged with equal weights over `images` (each has all 4 cells)."""
    share = 1.0 / len(images)
    contrasts: dict[str, dict[Cell, float]] = {}
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


def contrasts(cells: set[Cell]) -> dict[str, dict[Cell, float]]:
    """Effect name -> {cell: weight} for every 2x2 the `cells` complete (none: no 2x2)."""
    found: dict[str, dict[Cell, float]] = {}
    images = [image for image in FAMILIES
              if all((image, f, m) in cells for f in FAMILIES for m in MASKS)]
    if images:
        found.update(_mask_contrasts(images))
    for mask in MASKS:
        if all((i, t, mask) in cells for i in FAMILIES for t in FAMILIES):
            found.update(_towers_contrasts(mask))
    return found


def welch(estimate: float, weights: dict[Cell, float], variances: pd.Series,
          counts: pd.Series) -> tuple[float, float, float]:
    """(low, high, df) of the 95% Welch interval of a contrast of cell means: each cell's own variance,
    Welch-Satterthwaite df; NaN where a cell has one run, a point where every cell is constant."""
    used = [cell for cell, w in weights.items() if w]
    if any(counts[cell] < 2 for cell in used):
        return math.nan, math.nan, math.nan
    parts = {cell: weights[cell] ** 2 * variances[cell] / counts[cell] for cell in used}
    variance = sum(parts.values())
    if variance == 0:
        return estimate, estimate, math.inf
    df = variance ** 2 / sum(part ** 2 / (counts[cell] - 1) for cell, part in parts.items())
    half = stats.t.ppf(0.975, df) * math.sqrt(variance)
    return estimate - half, estimate + half, df


def paired(data: pd.DataFrame, metric: str, weights: dict[Cell, float]) -> tuple[float, float, float, int]:
    """(estimate, low, high, seeds) of the contrast per seed over the seeds every cell has, with a
    one-sample 95% t interval (NaN below 2 seeds)."""
    table = data.pivot_table(index="seed", columns=["image_family", "text_family", "text_mask"],
                             values=metric, aggfunc="mean")
    columns = [cell for cell in weights if cell in table.columns]
    if len(columns) < len(weights):
        return math.nan, math.nan, math.nan, 0
    per_seed = (table[columns] * pd.Series(weights)[columns]).sum(axis=1, min_count=len(columns)).dropna()
    n = len(per_seed)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    estimate = float(per_seed.mean())
    if n < 2:
        return estimate, math.nan, math.nan, n
    half = stats.t.ppf(0.975, n - 1) * float(per_seed.std(ddof=1)) / math.sqrt(n)
    return estimate, estimate - half, estimate + half, n


def effects(frame: pd.DataFrame, metric: str) -> list[Effect]:
    """Every effect of the 2x2s the runs form on `metric` (a column of `frame`), with its 95% intervals."""
    data = frame.dropna(subset=[metric])
    cells = data.groupby(["image_family", "text_family", "text_mask"])[metric]
    means, counts, variances = cells.mean(), cells.count(), cells.var(ddof=1)
    found = []
    for name, weights in contrasts(set(means.index)).items():
        estimate = float(sum(w * means[cell] for cell, w in weights.items()))
        low, high, df = welch(estimate, weights, variances, counts)
        paired_estimate, paired_low, paired_high, seeds = paired(data, metric, weights)
        found.append(Effect(metric, name, estimate, low, high, df, int(sum(counts[c] for c in weights)),
                            paired_estimate, paired_low, paired_high, seeds))
    return found


def _interval(low: float, high: float) -> str:
    return "–" if np.isnan(low) else f"[{low:+.1f}, {high:+.1f}]"


def effects_frame(arms: list[Arm], scores: list[Score]) -> pd.DataFrame:
    """The report's table: one row per metric x effect (estimate, Welch 95% interval and df, runs; the
    paired estimate and interval over the seeds the cells share)."""
    frame = seed_frame(arms, scores)
    rows = []
    for metric in [c for c in frame.columns if c not in CELL_COLUMNS]:
        for effect in effects(frame, metric):
            rows.append({"metric": metric, "effect": effect.effect, "estimate": f"{effect.estimate:+.2f}",
                         "95% interval (Welch)": _interval(effect.low, effect.high),
                         "Welch df": "–" if np.isnan(effect.df) else f"{effect.df:.1f}", "runs": effect.runs,
                         "paired by seed": "–" if not effect.paired_seeds else
                         f"{effect.paired_estimate:+.2f} {_interval(effect.paired_low, effect.paired_high)}",
                         "seeds paired": effect.paired_seeds})
    return pd.DataFrame(rows)
