"""The scaling-law fitter against synthetic data with known parameters: it recovers them, the frontier
keeps exactly the compute-optimal points, held-out points are predicted, intervals cover the truth,
the verdict names the better family and the crossing lands where the two laws cross analytically."""

from __future__ import annotations

import numpy as np
import pytest

from results.scaling_fit import Law, compare, crossings, fit_law, pareto_frontier, verdict_sentence


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
                           "label": f"s{size} b{budget}"})
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
    # mixer's law is lower everywhere; at 100x the extrapolation's interval may be too wide to say so
    assert [v["better"] for v in result["verdicts"]][:2] == ["mixer"] * 2
    assert all(v["difference"] > 0 and v["better"] in ("mixer", None) for v in result["verdicts"])
    first = result["verdicts"][0]
    assert first["interval"][0] < first["difference"] < first["interval"][1] and first["interval"][0] > 0
    sentence = verdict_sentence(result)
    assert sentence.count("mixer is better") >= 2 and "do not cross" in sentence and sentence.endswith(".")


def test_crossing_is_where_the_laws_meet():
    # 20 C^-0.5 + 10 = 10 C^-0.25 + 12 at C = 1e12 * x with 20/sqrt(x) - 10/x^0.25 = 2: x = 16.58...
    first, second = Law(20.0, 0.5, 10.0, 1e12), Law(10.0, 0.25, 12.0, 1e12)
    found = crossings(first, second, 1e12, 1e15)
    assert len(found) == 1
    x = found[0] / 1e12
    assert 20 * x ** -0.5 + 10 == pytest.approx(10 * x ** -0.25 + 12, abs=0.01)
