"""Is a difference between two arms real, and does it matter? Intervals over seeds, multiplicity, verdicts.

Each arm is compared with the first (the baseline), metric by metric:
- several seeds on both sides: the paired t interval of the per-seed differences when both arms ran
  the same seeds (same data order and evaluation), else the Welch (unequal-variance) t interval;
- one seed on either side: the difference and, where both runs have one, its interval over the
  evaluation images (the runs' bootstrap CIs combined), which leaves out seed-to-seed variance: no
  verdict, unless a seed spread is supplied (:class:`SeedSpread`, ``--seed-sd``), which then sets the
  interval and is named beside it.
The primary endpoint is tested at 0.05 (Holm across arms when several are compared with the baseline);
the secondary metrics form one family, Holm-corrected by default (``correction="bh"``: Benjamini-Hochberg
through scipy's ``false_discovery_control``). Verdict words, from the compared arm's side
(endpoints.py holds each metric's direction, kind and thresholds):
``better`` / ``worse``: significant and at least the minimum difference of practical interest;
``negligible``: significant but smaller; ``equivalent``: not significant, the interval inside
+- that minimum; ``inconclusive``: neither. No word (``verdict == ""``, ``reason`` says why) on
diagnostics, on metrics where both arms are within the ceiling margin, on throughput not measured under
the same conditions, and with one seed and no spread. ``seeds_needed`` is the seeds per arm a two-sided
t test would need for 80% power at the observed difference and spread, at 0.05 / (family size) where a
correction applies (Bonferroni's bound on Holm).

    verdicts = compare_arms(arms, scores, primary="toy_top1_seen")
    print(primary_sentence(verdicts), summary_sentence(verdicts))

Reads nothing itself; used by ``python -m results.report`` (wording: results/verdict_text.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from results import endpoints
from results.runs import Arm, Run
from results.scores import Score
from results.tables import HEADLINE, Metric, run_ci

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8
CORRECTIONS = ("holm", "bh", "none")


@dataclass(frozen=True)
class SeedSpread:
    """A seed-to-seed standard deviation of the primary metric from outside the compared runs."""

    sd: float
    source: str  # where it comes from, in words (printed beside every interval it sets)
    df: int | None = None  # degrees of freedom of the estimate; None: taken as known (normal interval)


def spread_from_arms(arms: list[Arm], key: str, scores: list[Score]) -> SeedSpread | None:
    """The seed sd of ``key`` pooled within arms (each arm's runs differ only in the seed), with its
    degrees of freedom, sum(n_arm - 1); None when no arm has two runs with the metric."""
    metric = next(m for m in HEADLINE if m.key == key)
    squares, df, names = 0.0, 0, []
    for arm in arms:
        values = [v for v in (metric.per_run(run, scores) for run in arm.runs) if v is not None]
        if len(values) >= 2:
            squares += float(np.var(values, ddof=1)) * (len(values) - 1)
            df += len(values) - 1
            names.append(f"{len(values)} runs of {arm.label}")
    if df == 0:
        return None
    return SeedSpread(math.sqrt(squares / df), f"{key} over {', '.join(names)} (pooled, --seed-sd-from)", df)


@dataclass
class Verdict:
    metric: str  # headline key
    label: str  # headline label
    arm: str
    baseline: str
    difference: float  # arm mean - baseline mean
    low: float  # 95% interval of the difference, NaN where there is none
    high: float
    verdict: str  # better | worse | negligible | equivalent | inconclusive | "" (no verdict: see reason)
    method: str  # how the interval was made, in words
    role: str = "secondary"  # primary | secondary | diagnostic
    p: float = math.nan
    p_adjusted: float = math.nan
    reason: str = ""
    seeds_needed: int | None = None  # per arm, for 80% power at this difference; None: cannot say
    spread: float = math.nan  # the seed sd behind seeds_needed (of the differences when paired)
    means: tuple[float, float] = (math.nan, math.nan)  # (arm, baseline)
    seeds: tuple[int, int] = (0, 0)
    paired: bool = False
    budget: float | None = None  # samples seen of the primary's evaluation
    min_difference: float = math.nan
    notes: list[str] = field(default_factory=list)

    def interval(self, decimals: int = 2) -> str:
        if math.isnan(self.low):
            return "–"
        return f"[{self.low:+.{decimals}f}, {self.high:+.{decimals}f}]"


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): the 95% Welch t interval of the difference of means."""
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return float(np.mean(a) - np.mean(b)), float(interval.low), float(interval.high)


def seeds_for_power(difference: float, sd: float, paired: bool = False, alpha: float = ALPHA,
                    power: float = POWER, limit: int = 10_000) -> int | None:
    """Seeds per arm (pairs when ``paired``) for a two-sided t test at ``alpha`` to reach ``power`` at
    this difference and seed sd (noncentral t); None when no finite number up to ``limit`` does."""
    if not (math.isfinite(difference) and math.isfinite(sd)) or sd <= 0 or difference == 0:
        return None
    effect = abs(difference) / sd

    def achieved(n: int) -> float:
        df, ncp = (n - 1, effect * math.sqrt(n)) if paired else (2 * n - 2, effect * math.sqrt(n / 2))
        critical = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp))

    if achieved(limit) < power:
        return None
    low, high = 2, limit  # power rises with n: bisect for the first n that reaches it
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if achieved(middle) < power else (low, middle)
    return low


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (familywise error), in the input order."""
    order = np.argsort(p_values)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def adjust(p_values: list[float], correction: str) -> list[float]:
    if not p_values or correction == "none":
        return list(p_values)
    if correction == "holm":
        return holm(p_values)
    return [float(p) for p in stats.false_discovery_control(p_values, method="bh")]


@dataclass
class Sample:
    """One arm's values of one metric: per seed, with each run's evaluation-set CI where it has one."""

    seeds: list[str]
    values: list[float]
    cis: list[tuple[float, float] | None]


def _sample(arm: Arm, metric: Metric, scores: list[Score], budget: float | None) -> Sample:
    sample = Sample([], [], [])
    for run in arm.runs:
        if budget is not None:
            value, ci = endpoints.value_at(run, metric.key, budget)
        else:
            value = metric.per_run(run, scores)
            ci = run_ci(metric.key, run, scores) if value is not None else None
        if value is not None and math.isfinite(value):
            sample.seeds.append(json.dumps(run.seed))
            sample.values.append(float(value))
            sample.cis.append(ci)
    return sample


def _paired(a: Sample, b: Sample) -> bool:
    return len(set(a.seeds)) == len(a.seeds) and sorted(a.seeds) == sorted(b.seeds)


def _estimate(verdict: Verdict, a: Sample, b: Sample, spread: SeedSpread | None) -> None:
    """Fill the difference, interval, p and spread: over seeds, from a given spread, or eval-set only."""
    verdict.difference = float(np.mean(a.values) - np.mean(b.values))
    if len(a.values) >= 2 and len(b.values) >= 2:
        if _paired(a, b):
            by_seed = dict(zip(b.seeds, b.values, strict=True))
            matched = [by_seed[seed] for seed in a.seeds]
            differences = np.subtract(a.values, matched)
            verdict.spread = float(np.std(differences, ddof=1)) if np.ptp(differences) > 0 else 0.0
            verdict.method = f"paired t over {len(a.values)} shared seeds"
            verdict.paired = True
        else:
            spreads = [np.std(v, ddof=1) if np.ptp(v) > 0 else 0.0 for v in (a.values, b.values)]
            verdict.spread = float(math.sqrt((spreads[0] ** 2 + spreads[1] ** 2) / 2))
            verdict.method = f"Welch t, {len(a.values)} vs {len(b.values)} seeds"
        if verdict.spread == 0:  # no spread at all: the test is undefined, the means decide nothing
            verdict.reason = "no spread over seeds"
            return
        result = (stats.ttest_rel(a.values, matched) if _paired(a, b)
                  else stats.ttest_ind(a.values, b.values, equal_var=False))
        interval = result.confidence_interval(CONFIDENCE)
        verdict.low, verdict.high, verdict.p = float(interval.low), float(interval.high), float(result.pvalue)
        verdict.seeds_needed = seeds_for_power(verdict.difference, verdict.spread, paired=verdict.paired)
        return
    if spread is not None:
        error = spread.sd * math.sqrt(1 / len(a.values) + 1 / len(b.values))
        law = stats.t(spread.df) if spread.df else stats.norm()
        half = float(law.ppf(1 - ALPHA / 2)) * error
        verdict.low, verdict.high = verdict.difference - half, verdict.difference + half
        verdict.p = float(2 * law.sf(abs(verdict.difference) / error))
        verdict.spread = spread.sd
        verdict.method = f"seed sd {spread.sd:.3g} from {spread.source}"
        verdict.seeds_needed = seeds_for_power(verdict.difference, spread.sd)
        return
    verdict.reason = "one seed per arm: the interval covers evaluation images only, not seeds"
    if len(a.values) == 1 and len(b.values) == 1 and a.cis[0] and b.cis[0]:
        # each run's bootstrap CI as a normal interval; independent evaluation sets' errors add in squares
        z = stats.norm.ppf(1 - ALPHA / 2)
        error = math.hypot(*((ci[1] - ci[0]) / (2 * z) for ci in (a.cis[0], b.cis[0])))
        verdict.low, verdict.high = verdict.difference - z * error, verdict.difference + z * error
        verdict.method = "bootstrap over evaluation images only"
    else:
        verdict.method = f"{len(a.values)} vs {len(b.values)} seeds"


def _gate(verdict: Verdict, rule: endpoints.Rule, arm: Arm, baseline: Arm) -> str:
    """Why this comparison gets no verdict word ('' when it may get one)."""
    if rule.kind == "diagnostic":
        return "diagnostic, not an outcome"
    if rule.ceiling is not None and min(verdict.means) >= rule.ceiling - endpoints.CEILING_MARGIN:
        return f"at ceiling (both arms within {endpoints.CEILING_MARGIN:g} points of {rule.ceiling:g}%)"
    if rule.kind == "throughput" and not same_conditions(arm.runs + baseline.runs, paired=True):
        return "timed under conditions the run folders do not show to be the same"
    return verdict.reason


def same_conditions(runs: list[Run], paired: bool) -> bool:
    """In-training throughput compares only runs that record one machine, device, thread count and
    process count (the run folders record no machine name today, so no such pair exists yet)."""
    keys = ("host", "device", "torch_threads", "cpu_capability", "world_size")
    settings = {tuple(json.dumps(run.config.get(key)) for key in keys) for run in runs}
    return paired and len(settings) == 1 and all(run.config.get("host") for run in runs)


def _word(verdict: Verdict, rule: endpoints.Rule, significant: bool) -> str:
    delta = verdict.min_difference
    if significant:
        if abs(verdict.difference) < delta:
            return "negligible"
        return "better" if (verdict.difference > 0) == rule.higher_is_better else "worse"
    if -delta < verdict.low and verdict.high < delta:
        return "equivalent"
    return "inconclusive"


def _min_difference(key: str, rule: endpoints.Rule, baseline_mean: float,
                    overrides: dict[str, float]) -> float:
    delta = overrides.get(key, rule.min_difference)
    return delta * abs(baseline_mean) if rule.kind in endpoints.RELATIVE_KINDS else delta


def compare_arms(arms: list[Arm], scores: list[Score], primary: str | None = None,
                 correction: str = "holm", spread: SeedSpread | None = None,
                 min_differences: dict[str, float] | None = None) -> list[Verdict]:
    """One Verdict per (arm after the first, per-run headline metric with values on both sides); the
    primary metric's first. ``spread`` sets the primary's interval where an arm has one seed."""
    if len(arms) < 2:
        return []
    overrides = min_differences or {}
    runs = [run for arm in arms for run in arm.runs]
    budget = endpoints.common_budget(runs, primary) if primary else None
    metrics = sorted((m for m in HEADLINE if m.per_run is not None and endpoints.rule(m.key)),
                     key=lambda m: m.key != primary)
    baseline, verdicts = arms[0], []
    for metric in metrics:
        rule = endpoints.rule(metric.key)
        is_primary = metric.key == primary
        base = _sample(baseline, metric, scores, budget if is_primary else None)
        for arm in arms[1:]:
            values = _sample(arm, metric, scores, budget if is_primary else None)
            if not values.values or not base.values:
                continue
            verdict = Verdict(metric.key, metric.label, arm.label, baseline.label, math.nan, math.nan,
                              math.nan, "", "", role="primary" if is_primary else (
                                  "diagnostic" if rule.kind == "diagnostic" else "secondary"),
                              means=(float(np.mean(values.values)), float(np.mean(base.values))),
                              seeds=(len(values.values), len(base.values)),
                              budget=budget if is_primary else None)
            verdict.min_difference = _min_difference(metric.key, rule, verdict.means[1], overrides)
            _estimate(verdict, values, base, spread if is_primary else None)
            verdict.reason = _gate(verdict, rule, arm, baseline)
            if verdict.reason and math.isfinite(verdict.p):  # gated: seeds could not make it a verdict
                verdict.seeds_needed = None
            verdicts.append(verdict)
    for role, method in (("primary", "holm"), ("secondary", correction)):
        family = [v for v in verdicts if v.role == role and not v.reason and math.isfinite(v.p)]
        for verdict, adjusted in zip(family, adjust([v.p for v in family], method), strict=True):
            verdict.p_adjusted = adjusted
            verdict.verdict = _word(verdict, endpoints.rule(verdict.metric), adjusted < ALPHA)
            if method != "none" and len(family) > 1:  # sized for the corrected test (Bonferroni's bound)
                verdict.seeds_needed = seeds_for_power(verdict.difference, verdict.spread, verdict.paired,
                                                       alpha=ALPHA / len(family))
    return verdicts
