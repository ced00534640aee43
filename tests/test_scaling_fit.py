"""The scaling-law fitter against synthetic data with known parameters: it recovers them, the frontier
keeps exactly the compute-optimal points, held-out points are predicted, intervals cover the truth,
the verdict names the better family and the crossing lands where the two laws cross analytically."""

from __future__ import annotations

import numpy as np
import pytest

from results.scaling_cells import cells_sentence, matched_cells
from results.scaling_fit import (
    Law,
    compare,
    crossings,
    fit_family,
    fit_law,
    pareto_frontier,
    verdict_sentence,
)


def test_fit_recovers_known_parameters_exactly_without_noise_and_closely_with_it():
    compute = np.geomspace(1e12, 3e14, 10)
    truth = Law(a=40.0, alpha=0.35, e_inf=12.0, c_ref=1e12)
    law = fit_law(compute, truth(compute))
    assert (law.a, law.alpha, law.e_inf) == pytest.approx((40.0, 0.35, 12.0), rel=1e-4)
    noisy = truth(compute) + np.random.default_rng(0).normal(0, 0.2, len(compute))
    law = fit_law(compute, noisy)
    assert law.alpha == pytest.approx(0.35, abs=0.08) and law.e_inf == pytest.approx(12.0, abs=3.0)
    assert np.abs(law(compute) - truth(compute)).max() < 0.5
    with pytest.raises(ValueError, match="3 distinct compute"):
        fit_law([1e12, 1e12, 2e12], [30, 29, 28])


def test_frontier_keeps_only_points_better_than_every_cheaper_point():
    compute = [1, 2, 2, 3, 4, 5]
    error = [10, 11, 9, 9.5, 7, 8]
    assert pareto_frontier(compute, error).tolist() == [0, 2, 4]


def grid(law: Law, rng, seeds: int = 3, noise: float = 0.3) -> list[dict]:
    """4 sizes x 3 budgets; the off-diagonal (mis-sized) points pay a penalty, as real grids do."""
    points = []
    for size in range(4):
        for budget in range(3):
            compute = 1e12 * 2.0 ** (size + budget) * (1 + 0.1 * size)
            error = law(compute) + 1.5 * abs(size - budget)
            points.append({"compute": compute, "errors": list(error + rng.normal(0, noise, seeds)),
                           "label": f"s{size} b{budget}", "size": f"w{size}", "budget": budget})
    return points


def test_compare_predicts_held_out_points_and_gives_the_verdict_with_intervals():
    rng = np.random.default_rng(3)
    mixer, transformer = Law(30.0, 0.5, 10.0, 1e12), Law(30.0, 0.3, 18.0, 1e12)
    result = compare({"mixer": grid(mixer, rng), "transformer": grid(transformer, rng)}, holdout=2,
                     bootstrap=200)
    for family, truth in (("mixer", mixer), ("transformer", transformer)):
        fit = result["fits"][family]
        held = [row for row in fit.frontier if row["held_out"]]
        assert len(held) == 2 and held[-1]["compute"] == max(r["compute"] for r in fit.frontier)
        assert max(abs(e) for e in fit.prediction_error) < 2.0  # points of error, seed noise 0.3
        low, high = fit.intervals["alpha"]
        assert low <= truth.alpha <= high and len(fit.samples["a"]) > 100
    # mixer's law is lower everywhere; only the largest measured compute gets a verdict, 10x and 100x are
    # extrapolations with numbers and no verdict word
    assert [v["better"] for v in result["verdicts"]] == ["mixer", None, None]
    assert [v["kind"] for v in result["verdicts"]] == ["verdict", "extrapolation", "extrapolation"]
    assert all(v["difference"] > 0 for v in result["verdicts"])
    first = result["verdicts"][0]
    assert first["interval"][0] < first["difference"] < first["interval"][1] and first["interval"][0] > 0
    # every resample is a fit, none is dropped; the grid's mis-sized frontier points miss the law by more
    # than the seed noise, so the residuals' spread is drawn (resampling seeds would hide that lack of fit)
    for fit in result["fits"].values():
        assert len(fit.samples["a"]) == 200 and fit.bootstrap_kind == "parametric"
    sentence = verdict_sentence(result)
    assert sentence.count("mixer is better") == 1 and "not a verdict" in sentence and sentence.endswith(".")
    assert "do not cross inside the measured range" in sentence


def test_crossing_is_where_the_laws_meet():
    # 20 C^-0.5 + 10 = 10 C^-0.25 + 12 at C = 1e12 * x with 20/sqrt(x) - 10/x^0.25 = 2: x = 16.58...
    first, second = Law(20.0, 0.5, 10.0, 1e12), Law(10.0, 0.25, 12.0, 1e12)
    found = crossings(first, second, 1e12, 1e15)
    assert len(found) == 1
    x = found[0] / 1e12
    assert 20 * x ** -0.5 + 10 == pytest.approx(10 * x ** -0.25 + 12, abs=0.01)


def test_points_before_the_learning_onset_are_not_fitted_and_too_few_points_give_no_verdict():
    rng = np.random.default_rng(5)
    law = Law(30.0, 0.5, 10.0, 1e12)
    points = grid(law, rng)
    # an onset above every point's error: nothing changes; one that cuts the frontier to 3 points leaves
    # 1 fitted point after 2 held out: under-determined, no law, no intervals, no verdict
    full = fit_family(points, 2, 1e14, bootstrap=20)
    assert fit_family(points, 2, 1e14, bootstrap=20, onset_error=100).fitted == full.fitted > 3
    onset = full.frontier[-3]["error"] + 1e-9  # past it: exactly the last 3 frontier points
    cut = fit_family(points, 2, 1e14, bootstrap=20, onset_error=onset)
    assert cut.fitted == 1 and cut.law is None and cut.intervals is None and not cut.determined
    assert len(cut.frontier) == 3 and "under-determined" in cut.status()
    # exactly as many fitted points as parameters: a law through them, still without intervals
    three = fit_family(points, 0, 1e14, bootstrap=20, onset_error=onset)
    assert three.fitted == 3 and three.law is not None and three.intervals is None
    result = compare({"mixer": points, "transformer": grid(Law(30.0, 0.3, 18.0, 1e12), rng)}, holdout=2,
                     bootstrap=20, onset_error=onset)
    assert all(v["better"] is None for v in result["verdicts"])
    assert "No law-based verdict" in verdict_sentence(result)


def test_one_seed_per_point_gets_a_parametric_bootstrap_that_covers_the_truth():
    rng = np.random.default_rng(7)
    truth = Law(40.0, 0.35, 12.0, 1e12)
    compute = np.geomspace(1e12, 1e15, 14)
    points = [{"compute": c, "errors": [float(truth(c) + rng.normal(0, 0.5))], "label": str(i)}
              for i, c in enumerate(compute)]
    fit = fit_family(points, 2, compute[-1], bootstrap=300)
    assert fit.bootstrap_kind == "parametric" and len(fit.samples["alpha"]) == 300
    for name in ("a", "alpha", "e_inf"):
        low, high = fit.intervals[name]
        assert low <= getattr(truth, name) <= high, name
    assert max(abs(e) for e in fit.prediction_error) < 2.0
    # three seeds per point scattered only by seed noise: the seeds within each point are resampled
    seeded = [{"compute": c, "errors": list(truth(c) + rng.normal(0, 0.5, 3)), "label": str(i)}
              for i, c in enumerate(compute)]
    fit = fit_family(seeded, 2, compute[-1], bootstrap=300)
    assert fit.bootstrap_kind == "seeds" and len(fit.samples["alpha"]) == 300
    assert fit.intervals["alpha"][0] <= truth.alpha <= fit.intervals["alpha"][1]


def test_matched_cells_are_the_headline_with_seed_level_intervals():
    rng = np.random.default_rng(11)
    low, high = grid(Law(30.0, 0.5, 10.0, 1e12), rng), grid(Law(30.0, 0.5, 20.0, 1e12), rng)
    cells = matched_cells({"transformer": high, "mixer": low})
    assert cells["families"] == ["mixer", "transformer"] and len(cells["cells"]) == 12
    for cell in cells["cells"]:
        assert cell["difference"] == pytest.approx(10.0, abs=1.0)  # E_inf differs by 10, seed noise 0.3
        assert cell["interval"][0] > 0 and cell["separated"] == "first"
    sentence = cells_sentence(cells)
    assert "the mixer's error is lower at 12 of 12" in sentence and "excludes 0 in 12 of 12" in sentence
    assert "every transformer seed is worse than every mixer seed in 12 of 12" in sentence
