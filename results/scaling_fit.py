"""Saturating power laws of error against training compute, fitted on the compute-optimal frontier.

    E(C) = A * (C / C_ref) ** -alpha + E_inf        (C: training FLOPs; C_ref: the smallest compute)

Why this form and this frontier (docs/scaling-laws.md): zero-shot error cannot fall below the task's
irreducible error, so a pure power law bends the wrong way at large compute; E_inf takes the floor.
Only the frontier (each point better than every point of less compute: the best a model size can do
at that compute) follows a law of compute alone; points off it measure a mis-sized model (Cherti et
al. 2023, Nezhurina et al. 2025 fit the same frontier). Points at or above a declared learning-onset
error (`onset_error`) are not part of it: before the onset the error is not a power law of compute.
The law is fitted without the `holdout` largest-compute frontier points (or those above `fit_below`)
and must predict them. A fit with no more points than its 3 parameters is under-determined: it is
reported without intervals and gives no verdict. Intervals: a bootstrap that never drops a resample,
over the seeds within each fitted point when seed noise explains the scatter about the law, else
parametric (the fitted law plus normal residuals of the fit's own spread: one seed per point, or a
lack of fit larger than the seed noise). The verdict is stated only at the largest compute both
families have measured; at 10x and 100x beyond it the laws give predictions, not verdicts.

    from results.scaling_fit import fit_law, compare
    law = fit_law(compute, error)            # Law(a, alpha, e_inf, c_ref)
    result = compare({"mixer": points, "transformer": points}, holdout=2, onset_error=75)

Reads numbers only (numpy, scipy); no model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

HORIZONS = (1.0, 10.0, 100.0)  # x the largest compute both families measured; only 1x is a verdict
PARAMETERS = 3  # A, alpha, E_inf


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
    if len(compute) < PARAMETERS or len(np.unique(compute)) < 3:
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
    law: Law | None  # None: fewer fitted points than parameters
    frontier: list[dict]  # {compute, error, label, held_out, predicted}
    prediction_error: list[float]  # predicted - observed at each held-out point (error points)
    intervals: dict[str, tuple[float, float]] | None  # a, alpha, e_inf: 95% bootstrap; None: under-determined
    samples: dict[str, np.ndarray]  # bootstrap draws of the parameters and of E at each horizon
    fitted: int = 0  # frontier points the law is fitted on
    before_onset: list[str] = field(default_factory=list)  # labels of points at or above the onset error
    bootstrap_kind: str = "none"  # seeds | parametric | none

    @property
    def determined(self) -> bool:
        return self.law is not None and self.fitted > PARAMETERS

    def status(self) -> str:
        if self.determined:
            return f"fitted on {self.fitted} frontier points ({self.bootstrap_kind} bootstrap)"
        return (f"under-determined: {self.fitted} frontier point(s) to fit for {PARAMETERS} parameters "
                "(no intervals, no verdict)")


def onset_split(points: list[dict], onset_error: float | None) -> tuple[list[int], list[int]]:
    """Indices of the points past the learning onset (seed-mean error below `onset_error`) and before it."""
    means = [float(np.mean(p["errors"])) for p in points]
    if onset_error is None:
        return list(range(len(points))), []
    return ([i for i, m in enumerate(means) if m < onset_error], [i for i, m in enumerate(means)
                                                                   if m >= onset_error])


def fit_family(points: list[dict], holdout: int, horizons_at: float, bootstrap: int = 1000, seed: int = 0,
               onset_error: float | None = None, fit_below: float | None = None) -> FamilyFit:
    """`points`: one dict per grid point, {compute, errors: [one per seed], label}. `horizons_at`: the
    largest compute both families measured (the horizons are multiples of it). `fit_below`: fit only
    frontier points of at most this compute and predict the others (else the `holdout` largest)."""
    past, before = onset_split(points, onset_error)
    compute = np.array([points[i]["compute"] for i in past], dtype=float)
    errors = [np.asarray(points[i]["errors"], dtype=float) for i in past]
    labels = [points[i].get("label", "") for i in past]
    means = np.array([e.mean() for e in errors])
    c_ref = float(min(p["compute"] for p in points))
    frontier = pareto_frontier(compute, means) if len(past) else np.array([], dtype=int)
    if fit_below is not None:
        fitted = np.array([i for i in frontier if compute[i] <= fit_below], dtype=int)
    else:
        fitted = frontier[:-holdout] if holdout else frontier
    law = None
    if len(fitted) >= PARAMETERS and len(np.unique(compute[fitted])) >= PARAMETERS:
        law = fit_law(compute[fitted], means[fitted], c_ref)
    kept = set(fitted.tolist())
    rows = [{"compute": float(compute[i]), "error": float(means[i]), "label": labels[i],
             "held_out": int(i) not in kept, "predicted": float(law(compute[i])) if law else float("nan")}
            for i in frontier]
    result = FamilyFit(law, rows, [r["predicted"] - r["error"] for r in rows if r["held_out"] and law], None,
                       {}, fitted=len(fitted), before_onset=[points[i].get("label", "") for i in before])
    if not result.determined:
        return result
    rng = np.random.default_rng(seed)
    spread = float(np.sqrt(np.sum((law(compute[fitted]) - means[fitted]) ** 2) / (len(fitted) - PARAMETERS)))
    # seeds resampled only when seed noise explains the scatter about the law; when the law misses the
    # points by more (lack of fit), resampling seeds would hide it, so the residuals' spread is drawn
    seed_se = (float(np.sqrt(np.mean([errors[i].var(ddof=1) / len(errors[i]) for i in fitted])))
               if all(len(errors[i]) >= 2 for i in fitted) else 0.0)
    by_seed = seed_se >= spread
    draws: dict[str, list[float]] = {k: [] for k in ("a", "alpha", "e_inf", *map(str, HORIZONS))}
    for _ in range(bootstrap):
        if by_seed:  # every fitted point keeps its place; its seeds are resampled
            resampled = np.array([rng.choice(errors[i], size=len(errors[i])).mean() for i in fitted])
        else:  # one seed per point: the law plus residuals of the fit's own spread
            resampled = law(compute[fitted]) + rng.normal(0.0, spread, len(fitted))
        boot = fit_law(compute[fitted], resampled, c_ref, start=law)
        for name in ("a", "alpha", "e_inf"):
            draws[name].append(getattr(boot, name))
        for horizon in HORIZONS:
            draws[str(horizon)].append(float(boot(horizon * horizons_at)))
    result.samples = {k: np.array(v) for k, v in draws.items()}
    result.intervals = {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
                        for k, v in result.samples.items() if k in ("a", "alpha", "e_inf")}
    result.bootstrap_kind = "seeds" if by_seed else "parametric"
    return result


def crossings(first: Law, second: Law, low: float, high: float, points: int = 2000) -> list[float]:
    """Computes in [low, high] where the two laws cross (sign changes of their difference)."""
    grid = np.geomspace(low, high, points)
    gap = first(grid) - second(grid)
    change = np.nonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0)[0]
    return [float(np.sqrt(grid[i] * grid[i + 1])) for i in change]


def compare(points: dict[str, list[dict]], holdout: int, bootstrap: int = 1000, seed: int = 0,
            onset_error: float | None = None, fit_below: float | None = None) -> dict:
    """Both families' fits; at the largest compute both measured, the difference in predicted error
    (second family minus first) with its 95% bootstrap interval and a verdict; at 10x and 100x that, the
    same numbers as an extrapolation, never a verdict."""
    names = sorted(points)
    if len(names) != 2:
        raise ValueError(f"a verdict compares two families, got {names}")
    largest = min(max(p["compute"] for p in points[family]) for family in names)  # both measured up to it
    smallest = min(p["compute"] for family in names for p in points[family])
    fits = {f: fit_family(points[f], holdout, largest, bootstrap, seed, onset_error, fit_below)
            for f in names}
    first, second = names
    both = fits[first].determined and fits[second].determined
    verdicts = []
    for horizon in HORIZONS:
        c = horizon * largest
        laws = fits[first].law is not None and fits[second].law is not None
        point = float(fits[second].law(c) - fits[first].law(c)) if laws else float("nan")
        low = high = float("nan")
        if both:
            gap = fits[second].samples[str(horizon)] - fits[first].samples[str(horizon)]  # paired by draw
            low, high = float(np.percentile(gap, 2.5)), float(np.percentile(gap, 97.5))
        better = None
        if both and horizon == 1.0:
            better = first if low > 0 else second if high < 0 else None
        verdicts.append({
            "horizon": horizon, "compute": c, "kind": "verdict" if horizon == 1.0 else "extrapolation",
            "difference": point, "interval": (low, high), "better": better, "determined": both,
            "predicted": {f: float(fits[f].law(c)) if fits[f].law else float("nan") for f in names},
            "predicted_interval": {f: tuple(float(np.percentile(fits[f].samples[str(horizon)], q))
                                            for q in (2.5, 97.5)) if fits[f].determined
                                   else (float("nan"), float("nan")) for f in names}})
    cross = (crossings(fits[first].law, fits[second].law, smallest, 100 * largest)
             if fits[first].law and fits[second].law else [])
    return {"families": names, "fits": fits, "verdicts": verdicts, "crossings": cross,
            "measured_crossings": [c for c in cross if c <= largest], "largest_compute": largest,
            "onset_error": onset_error, "fit_below": fit_below}


def law_sentence(result: dict) -> str:
    """What the laws say: a verdict at the largest compute both families measured, only when both laws are
    determined; beyond it, predictions labelled as such."""
    a, b = result["families"]
    undetermined = [f for f in result["families"] if not result["fits"][f].determined]
    if undetermined:
        return ("No law-based verdict: " + "; ".join(f"the {f} law is {result['fits'][f].status()}"
                                                     for f in undetermined) + ".")
    parts = []
    for v in result["verdicts"]:
        low, high = v["interval"]
        numbers = f"{b} minus {a}: {v['difference']:+.1f} points, 95% [{low:+.1f}, {high:+.1f}]"
        if v["kind"] == "verdict":
            who = f"{v['better']} is better" if v["better"] else "neither is better"
            parts.append(f"at the largest compute both measured ({v['compute']:.2g} FLOPs) {who} ({numbers})")
        else:
            parts.append(f"extrapolated to {v['horizon']:g}x that ({v['compute']:.2g} FLOPs, a prediction, "
                         f"not a verdict) {numbers}")
    measured = result["measured_crossings"]
    beyond = [c for c in result["crossings"] if c not in measured]
    cross = (f"; the laws cross inside the measured range at {', '.join(f'{c:.2g}' for c in measured)} FLOPs"
             if measured else "; the laws do not cross inside the measured range")
    if beyond:
        cross += f" and are predicted to cross at {', '.join(f'{c:.2g}' for c in beyond)} FLOPs"
    return "From the fitted laws, " + "; ".join(parts) + cross + "."


def verdict_sentence(result: dict, metric: str = "toy zero-shot top-1 error",
                     cells: dict | None = None) -> str:
    """The sentence docs/results/scaling.md quotes: the measured matched cells first
    (results.scaling_cells), then the laws."""
    from results.scaling_cells import cells_sentence

    lead = cells_sentence(cells) + " " if cells and cells["cells"] else ""
    return f"On {metric}: {lead}{law_sentence(result)}"
