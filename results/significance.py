"""When is a difference between two arms real? Welch's t interval over seeds, or the runs' bootstrap CIs.

For every headline metric measured per run, each arm is compared with the first arm (the baseline):
- both arms with several seeds: the difference of the seed means with its 95% Welch (unequal-variance)
  t interval, from scipy's ``ttest_ind(equal_var=False)``;
- one seed on either side: the runs' own 95% bootstrap CIs of the metric (the benchmark's, over the
  evaluation images), where the metric has them: a difference is real when the two CIs do not overlap.
The verdict is one word, from the arm's side: ``better`` / ``worse`` (the interval excludes 0, read with
the metric's direction: higher accuracy, lower loss) or ``tie``; a metric that neither rule can decide
gets no verdict. ``summary_sentence`` words the verdicts as the README's comparison sentence.

    rows = compare_arms(arms, scores)              # list of Verdict, one per (arm, metric)
    print(summary_sentence(rows))

Reads nothing itself; used by ``python -m results.report``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from results.runs import Arm
from results.scores import Score
from results.tables import HEADLINE, WORD_ORDER_TASKS

CONFIDENCE = 0.95
# metric key -> (higher is better, per-run (low, high) CI keys in final_eval or None)
DIRECTIONS = {
    "final_loss": (False, None),
    "toy_top1_seen": (True, ("toy_top1_seen_ci_lo", "toy_top1_seen_ci_hi")),
    "toy_top1_held_out": (True, ("toy_top1_held_out_ci_lo", "toy_top1_held_out_ci_hi")),
    "toy_i2t_r1": (True, None),
    "toy_t2i_r1": (True, None),
    "toy_val_loss": (False, None),
    "toy_top1": (True, ("toy_top1_ci_lo", "toy_top1_ci_hi")),
    "toy_robust_top1": (True, None),
    "toy_top5": (True, None),
    "toy_colour_acc": (True, None),
    "toy_shape_acc": (True, None),
    "toy_benchmark_top1": (True, None),
    "imagenet_top1": (True, ("imagenet_top1_ci_lo", "imagenet_top1_ci_hi")),
    "imagenet_top5": (True, None),
    "sts_avg_7": (True, None),
    "sts_avg_6_seed": (True, None),
    **{f"word_order_{task.replace('-', '_')}": (True, None) for task in WORD_ORDER_TASKS},
    # the blind prior and the bag-of-words score describe the text tower: lower means it reads order
    **{f"word_order_{task.replace('-', '_')}_blind": (False, None) for task in WORD_ORDER_TASKS},
    "word_order_bag_of_words": (False, None),
    "retrieval_i2t_r1": (True, None),
    "retrieval_t2i_r1": (True, None),
    "in_training_samples_per_s": (True, None),
}


@dataclass(frozen=True)
class Verdict:
    metric: str  # headline key
    label: str  # headline label
    arm: str
    baseline: str
    difference: float  # arm mean - baseline mean
    low: float  # 95% interval of the difference (Welch), or NaN under the CI rule
    high: float
    verdict: str  # better | worse | tie
    method: str  # how it was decided, in words

    def interval(self, decimals: int = 2) -> str:
        if math.isnan(self.low):
            return "–"
        return f"[{self.low:+.{decimals}f}, {self.high:+.{decimals}f}]"


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): the 95% Welch t interval of the difference of means."""
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return float(np.mean(a) - np.mean(b)), float(interval.low), float(interval.high)


def _word(low: float, high: float, higher_is_better: bool) -> str:
    if low > 0:
        return "better" if higher_is_better else "worse"
    if high < 0:
        return "worse" if higher_is_better else "better"
    return "tie"


def _values(arm: Arm, metric, scores: list[Score]) -> list[float]:
    return [v for v in (metric.per_run(run, scores) for run in arm.runs) if v is not None]


def _run_cis(arm: Arm, keys: tuple[str, str]) -> list[tuple[float, float]]:
    cis = []
    for run in arm.runs:
        low, high = (run.final_eval.get(key) for key in keys)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            cis.append((float(low), float(high)))
    return cis


def compare_arms(arms: list[Arm], scores: list[Score]) -> list[Verdict]:
    """A verdict for every (arm after the first, per-run headline metric) that the rules can decide."""
    verdicts = []
    if len(arms) < 2:
        return verdicts
    baseline = arms[0]
    for metric in HEADLINE:
        if metric.per_run is None or metric.key not in DIRECTIONS:
            continue
        higher_is_better, ci_keys = DIRECTIONS[metric.key]
        base = _values(baseline, metric, scores)
        for arm in arms[1:]:
            values = _values(arm, metric, scores)
            if not values or not base:
                continue
            if len(values) >= 2 and len(base) >= 2:
                difference, low, high = welch_interval(values, base)
                if math.isnan(low):  # no spread at all on both sides: the means decide nothing
                    continue
                method = f"Welch t, {len(values)} vs {len(base)} seeds"
                verdicts.append(Verdict(metric.key, metric.label, arm.label, baseline.label, difference, low,
                                        high, _word(low, high, higher_is_better), method))
            elif ci_keys is not None and len(values) == 1 and len(base) == 1:
                arm_cis, base_cis = _run_cis(arm, ci_keys), _run_cis(baseline, ci_keys)
                if not arm_cis or not base_cis:
                    continue
                (arm_low, arm_high), (base_low, base_high) = arm_cis[0], base_cis[0]
                # disjoint CIs: the gap's sign is the difference's; overlapping ones decide nothing
                gap = (arm_low - base_high) if arm_low > base_high else (
                    (arm_high - base_low) if arm_high < base_low else 0.0)
                word = _word(gap, gap, higher_is_better) if gap else "tie"
                verdicts.append(Verdict(metric.key, metric.label, arm.label, baseline.label,
                                        values[0] - base[0], math.nan, math.nan, word,
                                        "bootstrap CIs of one run each "
                                        f"({arm_low:.1f}-{arm_high:.1f} vs {base_low:.1f}-{base_high:.1f})"))
    return verdicts


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": v.label, "arm": v.arm, "vs": v.baseline,
                          "difference": f"{v.difference:+.2f}", "95% interval": v.interval(),
                          "verdict": v.verdict, "decided by": v.method} for v in verdicts])


def _short(label: str) -> str:
    return re.sub(r" \([^)]*\)$", "", label)  # "toy top-5 (%)" -> "toy top-5"


def summary_sentence(verdicts: list[Verdict]) -> str:
    """Per compared arm, the metrics where it is better, worse, and tied (the README's sentence)."""
    if not verdicts:
        return "No metric has enough seeds (or per-run CIs) on both arms to call a difference."
    sentences = []
    for arm in dict.fromkeys(v.arm for v in verdicts):
        mine = [v for v in verdicts if v.arm == arm]
        parts = []
        for word in ("better", "worse", "tie"):
            labels = [_short(v.label) for v in mine if v.verdict == word]
            if labels:
                parts.append(f"{'a tie' if word == 'tie' else word} on {'; '.join(labels)}")
        parts = parts[:1] + [part[0].upper() + part[1:] for part in parts[1:]]
        sentences.append(f"{arm} vs {mine[0].baseline} (95% intervals): " + ". ".join(parts) + ".")
    return " ".join(sentences)
