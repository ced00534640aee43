"""Samples to accuracy: the training samples at which a run's toy seen-class top-1 first reaches 40% and
50%, per arm (mean, sd, 95% t interval) and each arm's difference from the first arm (95% Welch interval).

How fast an arm learns, beside the primary endpoint (where it stands at the fixed budget). It is a
secondary measure, not a verdict: no p-value, no verdict word, and it is in neither multiplicity family
of results/significance.py (the primary endpoint's, the secondary metrics').

Read from the evaluation rows of each run's ``metrics.jsonl`` (results/runs.py: ``Run.evals``, its
``samples_seen`` and ``toy_top1_seen``; the default run evaluates every 64 steps of batch 128, 8,192
samples). The crossing is linearly interpolated between the last evaluation below the threshold and the
first at or above it, on the run's own lr schedule: a crossing inside the default's cooldown (its last
20%) depends on the budget that placed the cooldown. A run already at or above it at its first evaluation
has no bracketing pair: it gets that evaluation's samples, an upper bound, and is counted as such. A run
that never reaches it is censored: counted in "k of n reached", never given a number. Mean, sd and
interval are over the runs that reached it (fewer than 2: no interval), which flatters an arm with
censored runs: the slowest runs are the ones left out.

    rows = samples_to_accuracy.summarise(arms)              # [ArmCrossings], one per arm and threshold
    table = samples_to_accuracy.display_frame(rows)         # the report's table
    python -m results.report RUN... --out DIR               # writes DIR/samples_to_accuracy.csv

Reads nothing itself (numpy, pandas, scipy); used by ``python -m results.report``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from results.runs import Arm, Run
from results.significance import CONFIDENCE, welch_interval
from results.tables import MISSING

KEY = "toy_top1_seen"
# Both arms of the default run cross both inside its 81,920 samples on most seeds (seen top-1 means at
# 66k samples: Transformer 40.4, Mixer 58.4; at the end 55.3 and 66.8), so few runs are censored.
THRESHOLDS = (40.0, 50.0)


@dataclass(frozen=True)
class Crossing:
    """Where one run's curve first reaches a threshold; ``samples`` None: never (censored)."""

    samples: float | None
    upper_bound: bool = False  # reached by the first evaluation: no earlier one to interpolate from


def crossing(evals: pd.DataFrame, threshold: float, key: str = KEY) -> Crossing | None:
    """The samples seen at which ``key`` first reaches ``threshold`` (interpolated between the evaluations
    that bracket it); None when the run has no evaluation of ``key``."""
    if key not in evals.columns:
        return None
    rows = evals.dropna(subset=[key]).sort_values("samples_seen")
    if rows.empty:
        return None
    samples = rows["samples_seen"].to_numpy(dtype=float)
    values = rows[key].to_numpy(dtype=float)
    reached = np.flatnonzero(values >= threshold)
    if reached.size == 0:
        return Crossing(None)
    first = int(reached[0])
    if first == 0:
        return Crossing(float(samples[0]), upper_bound=True)
    # values[first - 1] < threshold <= values[first], so the slope is positive
    share = (threshold - values[first - 1]) / (values[first] - values[first - 1])
    return Crossing(float(samples[first - 1] + share * (samples[first] - samples[first - 1])))


@dataclass
class ArmCrossings:
    """One arm at one threshold: the runs that reached it and their summary."""

    arm: str
    threshold: float
    runs: int  # runs with evaluations of the key
    samples: list[float] = field(default_factory=list)  # of the runs that reached it, in run order
    upper_bounds: int = 0  # of those, reached by their first evaluation
    low: float = math.nan  # 95% t interval of the mean (NaN with fewer than 2)
    high: float = math.nan
    baseline: str = ""  # the first arm, for the difference ("" on the first arm itself)
    difference: float = math.nan  # mean - baseline's mean
    difference_low: float = math.nan  # 95% Welch interval (NaN unless both have 2 reached)
    difference_high: float = math.nan

    @property
    def reached(self) -> int:
        return len(self.samples)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(self.samples, ddof=1)) if len(self.samples) > 1 else math.nan


def t_interval(values: list[float]) -> tuple[float, float]:
    """95% t interval of the mean; NaN with fewer than 2 values, the point itself with no spread."""
    if len(values) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return float(low), float(high)


def run_crossings(run: Run, key: str = KEY, thresholds: tuple[float, ...] = THRESHOLDS
                  ) -> dict[float, Crossing | None]:
    return {threshold: crossing(run.evals, threshold, key) for threshold in thresholds}


def summarise(arms: list[Arm], key: str = KEY, thresholds: tuple[float, ...] = THRESHOLDS
              ) -> list[ArmCrossings]:
    """One :class:`ArmCrossings` per arm and threshold (arm order, then threshold order); [] when no run
    has evaluations of ``key``."""
    found = {arm.label: [run_crossings(run, key, thresholds) for run in arm.runs] for arm in arms}
    if all(c is None for per_run in found.values() for crossings in per_run for c in crossings.values()):
        return []
    rows: list[ArmCrossings] = []
    for threshold in thresholds:
        for arm in arms:
            crossings = [c[threshold] for c in found[arm.label] if c[threshold] is not None]
            row = ArmCrossings(arm.label, threshold, len(crossings),
                               [c.samples for c in crossings if c.samples is not None],
                               sum(c.upper_bound for c in crossings))
            row.low, row.high = t_interval(row.samples)
            rows.append(row)
        base = next(row for row in rows if row.threshold == threshold and row.arm == arms[0].label)
        for row in rows:
            if row.threshold != threshold or row is base:
                continue
            row.baseline, row.difference = base.arm, row.mean - base.mean
            spread = max(np.ptp(row.samples or [0]), np.ptp(base.samples or [0])) > 0
            if row.reached >= 2 and base.reached >= 2 and spread:  # Welch's t: 2 a side, some spread
                _, row.difference_low, row.difference_high = welch_interval(row.samples, base.samples)
    return rows


CSV_COLUMNS = ("metric", "threshold", "arm", "runs", "reached", "reached_at_first_evaluation", "samples_mean",
               "samples_sd", "ci95_low", "ci95_high", "baseline", "difference", "difference_ci95_low",
               "difference_ci95_high")


def csv_frame(rows: list[ArmCrossings], key: str = KEY) -> pd.DataFrame:
    """samples_to_accuracy.csv: one row per arm and threshold, every number unrounded (the header alone
    when no run has evaluations of ``key``)."""
    return pd.DataFrame([{"metric": key, "threshold": row.threshold, "arm": row.arm, "runs": row.runs,
                          "reached": row.reached, "reached_at_first_evaluation": row.upper_bounds,
                          "samples_mean": row.mean, "samples_sd": row.sd, "ci95_low": row.low,
                          "ci95_high": row.high, "baseline": row.baseline or None,
                          "difference": row.difference, "difference_ci95_low": row.difference_low,
                          "difference_ci95_high": row.difference_high} for row in rows],
                        columns=list(CSV_COLUMNS))


def runs_columns(arms: list[Arm], key: str = KEY, thresholds: tuple[float, ...] = THRESHOLDS
                 ) -> pd.DataFrame:
    """Per run (runs.csv): ``samples_to_<t>_<key>``, NaN where censored or not evaluated."""
    rows = []
    for arm in arms:
        for run in arm.runs:
            row: dict[str, object] = {"run": run.label}
            for threshold, found in run_crossings(run, key, thresholds).items():
                row[f"samples_to_{threshold:g}_{key}"] = (found.samples if found and found.samples is not None
                                                          else math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def _count(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:,.0f}"


def _interval(low: float, high: float, signed: bool = False) -> str:
    if math.isnan(low):
        return MISSING
    return f"[{low:+,.0f}, {high:+,.0f}]" if signed else f"[{low:,.0f}, {high:,.0f}]"


def display_frame(rows: list[ArmCrossings], columns: dict[str, str] | None = None) -> pd.DataFrame:
    """The report's table: threshold, arm, k of n reached, mean ± sd, its interval, the difference."""
    shown = []
    for row in rows:
        reached = f"{row.reached} of {row.runs}"
        if row.upper_bounds:
            reached += f" ({row.upper_bounds} by the first evaluation)"
        spread = f" ± {_count(row.sd)}" if row.reached > 1 else ""
        difference = MISSING
        if row.baseline and not math.isnan(row.difference):
            interval = _interval(row.difference_low, row.difference_high, True)
            difference = f"{row.difference:+,.0f} " + (interval if interval != MISSING else "(no interval)")
        shown.append({"seen top-1 reaches": f"{row.threshold:g}%",
                      "arm": (columns or {}).get(row.arm, row.arm), "runs that reached it": reached,
                      "samples (mean ± sd)": _count(row.mean) + spread,
                      "95% interval (t)": _interval(row.low, row.high),
                      "minus the first arm [95% Welch]": difference})
    return pd.DataFrame(shown)


def evaluation_spacing(arms: list[Arm], key: str = KEY) -> float | None:
    """The median samples between evaluations of ``key`` over every run (None: fewer than 2 anywhere)."""
    gaps = [np.diff(run.evals.dropna(subset=[key])["samples_seen"].to_numpy(dtype=float))
            for arm in arms for run in arm.runs if key in run.evals.columns]
    gaps = [gap for gap in gaps if gap.size]
    return float(np.median(np.concatenate(gaps))) if gaps else None


def method_text(arms: list[Arm], key: str = KEY) -> str:
    spacing = evaluation_spacing(arms, key)
    every = f" (here every {spacing:,.0f} samples)" if spacing else ""
    return ("Samples to accuracy, a secondary measure and not a verdict: the training samples at which "
            f"each run's toy seen-class top-1 first reaches {' and '.join(f'{t:g}%' for t in THRESHOLDS)}, "
            f"linearly interpolated between the two evaluations that bracket it{every}, on each run's own "
            "lr schedule (a crossing inside a final cooldown depends on where the budget put it). A run "
            "that never reaches it is censored: counted in 'runs that reached it', given no number. Mean, "
            "sd and the 95% t interval are over the runs that reached it (no interval with fewer than 2), "
            "so an arm with censored runs looks faster than it is. The difference is each arm's mean "
            "minus the first arm's (negative: fewer samples), with a 95% Welch interval; it carries no "
            "p-value and no verdict word and is outside the primary endpoint's and the secondary metrics' "
            "families. Every number, and each run's crossing in runs.csv: samples_to_accuracy.csv.")


def add_to_headline(doc, arms: list[Arm], rows: list[ArmCrossings], columns: dict[str, str]) -> None:
    """The method in one paragraph and the table, inside the report's headline section."""
    if rows:
        doc.add("p", method_text(arms))
        doc.add("table", display_frame(rows, columns))
