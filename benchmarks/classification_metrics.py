"""The classification metrics every zero-shot evaluation reports: top-k ranking with a fixed tie rule,
top-1 / top-5, mean per-class recall, a seeded percentile-bootstrap 95% CI of top-1, and the share of
predictions that keep a true attribute (the toy set's colour and shape).

Not run directly: `benchmarks.imagenet_scorer` and `benchmarks.toy_zeroshot` score with it (through
`benchmarks.evaluations`, the registry that `python -m benchmarks.imagenet_zeroshot` and training use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

BOOTSTRAP_RESAMPLES = 1000


def ranked_classes(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k class indices per row; ties go to the lower class index (stable sort), so a constant
    model always answers class 0 and scores exactly the share of class 0: chance on balanced data."""
    return torch.sort(logits.float(), dim=1, descending=True, stable=True)[1][:, :k]


def classification_metrics(ranked: torch.Tensor, targets: torch.Tensor, seed: int = 0,
                           resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """top1, top5, mean_per_class_recall, top1_ci95 (percentile bootstrap, seeded), n. Percent."""
    targets = targets.long().cpu()
    ranked = ranked.cpu()
    correct1 = (ranked[:, 0] == targets).numpy()
    correct5 = (ranked[:, :5] == targets[:, None]).any(dim=1).numpy()
    classes = np.unique(targets.numpy())
    recalls = [correct1[targets.numpy() == c].mean() for c in classes]
    rng = np.random.default_rng(seed)
    n = len(correct1)
    boot = np.array([correct1[rng.integers(0, n, n)].mean() for _ in range(resamples)]) * 100
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"top1": float(correct1.mean() * 100), "top5": float(correct5.mean() * 100),
            "mean_per_class_recall": float(np.mean(recalls) * 100), "top1_ci95": [float(low), float(high)],
            "n": int(n), "classes_present": int(len(classes))}


def attribute_accuracy(predicted: torch.Tensor, targets: torch.Tensor,
                       attributes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per attribute (e.g. colour, shape): % of images whose predicted class shares the true attribute."""
    names = sorted(attributes[0]) if attributes else []
    pairs = list(zip(predicted.tolist(), targets.tolist(), strict=True))
    return {f"{name}_acc": float(np.mean([attributes[p][name] == attributes[t][name] for p, t in pairs]))
            * 100 for name in names}
