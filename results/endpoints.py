"""How each headline metric may be read in a comparison: its direction, its kind, the smallest difference
of practical interest, its ceiling, and which metric is a comparison's primary endpoint.

Kinds and their documented defaults (docs/usage.md#how-the-report-decides):
- ``accuracy`` (top-1, top-5, R@1, word-order accuracy; percent): a difference under 1 point is
  "negligible"; both arms within 2 points of 100% is "at ceiling" (no verdict).
- ``similarity`` (STS Spearman x100): 1 point.
- ``loss`` (contrastive loss, nats): 0.05.
- ``throughput`` (samples/s): 5% of the baseline; a verdict only from one benchmark run timing both arms.
- ``diagnostic`` (blind text priors, the bag-of-words score, the last training batch's loss): shown, never
  given a verdict: they describe a tower, they are not a result of the comparison.

The primary endpoint defaults by recipe kind: ImageNet zero-shot top-1 where any run has it (a run at
scale), else toy seen-class top-1 (toy v5), else toy top-1 (toy v4 runs). Its value is read at the
largest number of samples seen that every compared run has evaluated. Samples to accuracy
(results/samples_to_accuracy.py) has no rule here: a secondary measure outside both families, no verdict.

    rule = endpoints.rule("sts_avg_7")             # Rule(kind="similarity", min_difference=1.0, ...)
    key = endpoints.default_primary(runs)          # "toy_top1_seen"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from results.runs import Run
from results.tables import WORD_ORDER_TASKS

# both arms this close to 100% cannot be told apart: 2 points is 64 of 3,200 toy images, and more than
# the seed sd of every committed metric near 100 (colour 0.1, top-5 0.9, swap-attribute 0.1)
CEILING_MARGIN = 2.0
# smallest difference a user would act on, per kind (--min-difference METRIC=VALUE overrides one metric):
# a convention, not a measurement; 1 point of top-1 is 500 of ImageNet's 50,000 validation images
MIN_DIFFERENCE = {"accuracy": 1.0, "similarity": 1.0, "loss": 0.05, "throughput": 0.05}
RELATIVE_KINDS = ("throughput",)  # min_difference is a share of the baseline's value


@dataclass(frozen=True)
class Rule:
    kind: str  # accuracy | similarity | loss | throughput | diagnostic
    higher_is_better: bool
    short: str  # the metric as the one-sentence verdict names it
    ceiling: float | None = None  # 100 for percentages
    key_secondary: bool = False  # named in the one-sentence verdict when it has a verdict

    @property
    def min_difference(self) -> float:
        return MIN_DIFFERENCE.get(self.kind, math.nan)


def _accuracy(short: str, key_secondary: bool = False) -> Rule:
    return Rule("accuracy", True, short, ceiling=100.0, key_secondary=key_secondary)


RULES: dict[str, Rule] = {
    "final_loss": Rule("diagnostic", False, "last training loss"),
    "toy_top1_seen": _accuracy("toy seen-class top-1", True),
    "toy_top1_held_out": _accuracy("toy held-out-class top-1", True),
    "toy_i2t_r1": _accuracy("toy image->text R@1"),
    "toy_t2i_r1": _accuracy("toy text->image R@1"),
    "toy_val_loss": Rule("loss", False, "toy val loss"),
    "toy_top1": _accuracy("toy top-1"),
    "toy_robust_top1": _accuracy("toy top-1 with v4 prompts"),
    "toy_top5": _accuracy("toy top-5"),
    "toy_colour_acc": _accuracy("toy colour accuracy"),
    "toy_shape_acc": _accuracy("toy shape accuracy"),
    "toy_benchmark_top1": _accuracy("toy top-1 (benchmark)"),
    "imagenet_top1": _accuracy("ImageNet zero-shot top-1", True),
    "imagenet_top5": _accuracy("ImageNet top-5"),
    "sts_avg_7": Rule("similarity", True, "STS (7 sets)", key_secondary=True),
    "sts_avg_6_seed": Rule("similarity", True, "STS (6 sets)"),
    **{f"word_order_{task.replace('-', '_')}": _accuracy(f"word order {task}") for task in WORD_ORDER_TASKS},
    **{f"word_order_{task.replace('-', '_')}_blind": Rule("diagnostic", False, f"{task} blind prior")
       for task in WORD_ORDER_TASKS},
    "word_order_bag_of_words": Rule("diagnostic", False, "bag-of-words score"),
    "retrieval_i2t_r1": _accuracy("retrieval image->text R@1", True),
    "retrieval_t2i_r1": _accuracy("retrieval text->image R@1", True),
    "train_samples_per_s": Rule("throughput", True, "training throughput"),
    "infer_samples_per_s": Rule("throughput", True, "inference throughput"),
    "in_training_samples_per_s": Rule("throughput", True, "samples/s during training"),
}
# per-run CI keys of final_eval (bootstrap over the evaluation images), where the benchmark writes one
CI_KEYS = {key: (f"{key}_ci_lo", f"{key}_ci_hi")
           for key in ("toy_top1_seen", "toy_top1_held_out", "toy_top1", "imagenet_top1")}
PRIMARY_BY_KIND = ("imagenet_top1", "toy_top1_seen", "toy_top1")  # the first any run has


def rule(key: str) -> Rule | None:
    return RULES.get(key)


def default_primary(runs: list[Run]) -> str | None:
    """ImageNet top-1 at scale, seen-class top-1 on toy v5, top-1 on toy v4: the first any run reports."""
    for key in PRIMARY_BY_KIND:
        for run in runs:
            if _finite(run.final_eval.get(key)) or (key in run.evals.columns
                                                    and run.evals[key].notna().any()):
                return key
    return None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def common_budget(runs: list[Run], key: str) -> float | None:
    """The largest samples seen at which every run has an evaluation of ``key`` (None: no such point)."""
    common: set[float] | None = None
    for run in runs:
        if key not in run.evals.columns:
            return None
        seen = set(run.evals.dropna(subset=[key])["samples_seen"].astype(float))
        common = seen if common is None else common & seen
    return max(common) if common else None


def value_at(run: Run, key: str, samples_seen: float) -> tuple[float, tuple[float, float] | None]:
    """The run's ``key`` and its bootstrap CI (if logged) at the evaluation made at ``samples_seen``."""
    row = run.evals[run.evals["samples_seen"].astype(float) == samples_seen].iloc[-1]
    low, high = row.get(f"{key}_ci_lo"), row.get(f"{key}_ci_hi")
    ci = (float(low), float(high)) if _finite(low) and _finite(high) else None
    return float(row[key]), ci
