"""Saturating power laws of error against training compute, fitted on the compute-optimal frontier.

    E(C) = A * (C / C_ref) ** -alpha + E_inf        (C: training FLOPs; C_ref: the smallest compute)

Why this form and this frontier (docs/scaling-laws.md): zero-shot error cannot fall below the task's
irreducible error, so a pure power law bends the wrong way at large compute; E_inf takes the floor.
Only the frontier (each point better than every point of less compute: the best a model size can do
at that compute) follows a law of compute alone; points off it measure a mis-sized model (Cherti et
al. 2023, Nezhurina et al. 2025 fit the same frontier). The law is fitted without the `holdout`
largest-compute frontier points and must predict them. Intervals come from a bootstrap that
resamples the seeds of every grid point, then the fitted frontier points.

    from results.scaling_fit import fit_law, compare
    law = fit_law(compute, error)            # Law(a, alpha, e_inf, c_ref)
    verdict = compare({"mixer": points, "transformer": points}, holdout=2)

Reads numbers only (numpy, scipy); no model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

HORIZONS = (1.0, 10.0, 100.0)  # x the largest measured compute


@dataclass(frozen=True)
class Law:
    a: float
    alpha: float
    e_inf: float
    c_ref: float

    def __call__(self, compute) -> np.ndarray:
        return self.a * (np.asarray(compute, dtype=float) / self.c_ref) ** -self.alpha + self.e_inf


def fit_law(compute, error, c_ref: float | None = None, start: Law | None = None) -> Law:
    """Least squares in error (points of error, as reported), A > 0, alpha in (0, 4], 0 <= E_inf <=
    the smallest error; the best of a few starts (the loss surface has flat valleys), or one `start`
    (a bootstrap refit starts from the point estimate)."""
    compute, error = np.asarray(compute, dtype=float), np.asarray(error, dtype=float)
    if len(compute) < 3 or len(np.unique(compute)) < 3:
        raise ValueError(f"a 3-parameter law needs >= 3 distinct compute values, got "
                         f"{len(np.unique(compute))}")
    c_ref = float(c_ref or compute.min())
    x = compute / c_ref
    floor = float(error.min())
    upper = max(floor, 1e-9)
    starts = [(start.a, start.alpha, min(start.e_inf, upper * 0.999))] if start else [
        (max(float(error.max() - share * floor), 1e-6), alpha0, share * floor)
        for alpha0 in (0.1, 0.3, 0.7, 1.5) for share in (0.1, 0.5, 0.9)]  # floor as a share of min error
    best = None
    for x0 in starts:
        result = least_squares(lambda p: p[0] * x ** -p[1] + p[2] - error, x0=list(x0),
                               bounds=([0.0, 1e-4, 0.0], [np.inf, 4.0, upper]))
        if best is None or result.cost < best.cost:
            best = result
    a, alpha, e_inf = best.x
    return Law(float(a), float(alpha), float(e_inf), c_ref)


def pareto_frontier(compute, error) -> np.ndarray:
    """Indices of the compute-optimal frontier, by compute: points with lower error than any point
    of less or equal compute."""
    compute, error = np.asarray(compute, dtype=float), np.asarray(error, dtype=float)
    order = np.lexsort((error, compute))
    kept, best = [], np.inf
    for i in order:
        if error[i] < best:
            kept.append(i)
            best = error[i]
    return np.array(kept, dtype=int)


@dataclass
class FamilyFit:
    law: Law
    frontier: list[dict]  # {compute, error, label, held_out, predicted}
    prediction_error: list[float]  # predicted - observed at each held-out point (error points)
    intervals: dict[str, tuple[float, float]]  # a, alpha, e_inf: 95% bootstrap
    samples: dict[str, np.ndarray]  # bootstrap draws of the parameters and of E at each horizon


def _frontier_fit(compute, means, holdout: int, c_ref: float):
    frontier = pareto_frontier(compute, means)
    fitted = frontier[:-holdout] if holdout else frontier
    return frontier, fitted, fit_law(compute[fitted], means[fitted], c_ref)


def fit_family(points: list[dict], holdout: int, horizons_at: float, bootstrap: int = 1000,
               seed: int = 0) -> FamilyFit:
    """`points`: one dict per grid point, {compute, errors: [one per seed], label}. `horizons_at`: the
    largest measured compute of the comparison (the horizons are multiples of it)."""
    compute = np.array([p["compute"] for p in points], dtype=float)
    errors = [np.asarray(p["errors"], dtype=float) for p in points]
    means = np.array([e.mean() for e in errors])
    c_ref = float(compute.min())
    frontier, fitted, law = _frontier_fit(compute, means, holdout, c_ref)
    held = [int(i) for i in frontier if i not in set(fitted.tolist())]
    rows = [{"compute": float(compute[i]), "error": float(means[i]), "label": points[i].get("label", ""),
             "held_out": int(i) in held, "predicted": float(law(compute[i]))} for i in frontier]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in ("a", "alpha", "e_inf", *map(str, HORIZONS))}
    for _ in range(bootstrap):
        resampled = np.array([rng.choice(e, size=len(e)).mean() for e in errors])  # over seeds
        try:
            front = pareto_frontier(compute, resampled)
            fit_points = front[:-holdout] if holdout else front
            chosen = rng.choice(fit_points, size=len(fit_points))  # over points
            boot = fit_law(compute[chosen], resampled[chosen], c_ref, start=law)
        except ValueError:  # a resample with < 3 distinct computes: no 3-parameter fit
            continue
        for name in ("a", "alpha", "e_inf"):
            draws[name].append(getattr(boot, name))
        for horizon in HORIZONS:
            draws[str(horizon)].append(float(boot(horizon * horizons_at)))
    samples = {k: np.array(v) for k, v in draws.items()}
    intervals = {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else
                 (float("nan"), float("nan")) for k, v in samples.items() if k in ("a", "alpha", "e_inf")}
    return FamilyFit(law, rows, [r["predicted"] - r["error"] for r in rows if r["held_out"]], intervals,
                     samples)


def crossings(first: Law, second: Law, low: float, high: float, points: int = 2000) -> list[float]:
    """Computes in [low, high] where the two laws cross (sign changes of their difference)."""
    grid = np.geomspace(low, high, points)
    gap = first(grid) - second(grid)
    change = np.nonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0)[0]
    return [float(np.sqrt(grid[i] * grid[i + 1])) for i in change]


def compare(points: dict[str, list[dict]], holdout: int, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Both families' fits and the verdict at the largest measured compute and 10x / 100x beyond: the
    difference in predicted error (second family minus first) with its 95% bootstrap interval."""
    names = sorted(points)
    if len(names) != 2:
        raise ValueError(f"a verdict compares two families, got {names}")
    largest = max(p["compute"] for family in names for p in points[family])
    smallest = min(p["compute"] for family in names for p in points[family])
    fits = {f: fit_family(points[f], holdout, largest, bootstrap, seed) for f in names}
    first, second = names
    verdicts = []
    for horizon in HORIZONS:
        a, b = fits[first].samples[str(horizon)], fits[second].samples[str(horizon)]
        n = min(len(a), len(b))
        gap = b[:n] - a[:n]  # independent resamples of the two families, paired by draw
        point = float(fits[second].law(horizon * largest) - fits[first].law(horizon * largest))
        low, high = (float(np.percentile(gap, 2.5)), float(np.percentile(gap, 97.5))) if n else (
            np.nan, np.nan)
        better = first if low > 0 else second if high < 0 else None
        verdicts.append({"horizon": horizon, "compute": horizon * largest, "difference": point,
                         "interval": (low, high), "better": better,
                         "predicted": {f: float(fits[f].law(horizon * largest)) for f in names},
                         "predicted_interval": {
                             f: tuple(float(np.percentile(fits[f].samples[str(horizon)], q))
                                      for q in (2.5, 97.5))
                             for f in names}})
    cross = crossings(fits[first].law, fits[second].law, smallest, 100 * largest)
    return {"families": names, "fits": fits, "verdicts": verdicts, "crossings": cross,
            "largest_compute": largest}


def verdict_sentence(result: dict, metric: str = "toy zero-shot top-1 error") -> str:
    """One sentence the README can quote: who is better at the largest measured compute, 10x and 100x."""
    parts = []
    for v in result["verdicts"]:
        low, high = v["interval"]
        a, b = result["families"]
        where = "at the largest measured compute" if v["horizon"] == 1 else f"at {v['horizon']:g}x that"
        who = (f"{v['better']} is better" if v["better"] else "neither is better")
        parts.append(f"{where} ({v['compute']:.2g} FLOPs) {who} ({b} minus {a}: {v['difference']:+.1f} "
                     f"points, 95% [{low:+.1f}, {high:+.1f}])")
    cross = result["crossings"]
    crossing = (f"; the fitted laws cross at {', '.join(f'{c:.2g}' for c in cross)} FLOPs" if cross
                else "; the fitted laws do not cross up to 100x")
    return f"On {metric}, " + ", ".join(parts) + crossing + "."
