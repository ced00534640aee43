"""results.samples_to_accuracy: the samples at which seen top-1 first reaches 40% / 50%, interpolated
between the evaluations that bracket it, censored runs counted and never given a number, per-arm t
intervals and the Welch difference checked against scipy.stats.t by hand, and the report's table and CSVs
(outside the verdicts' families)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_report import ARMS, make_run

from results import report
from results.runs import Arm
from results.samples_to_accuracy import crossing, display_frame, summarise

SAMPLES = [320.0, 640.0, 960.0, 1280.0]  # make_run: evaluations at steps 10, 20, 30, 40 of batch 32
CURVES = {  # seen top-1 at the four evaluations; the crossings, by hand, in the comments
    ("transformer", 0): [20.0, 30.0, 50.0, 60.0],  # 40: 640 + 10/20 * 320 = 800; 50: 960 exactly
    ("transformer", 1): [25.0, 38.0, 46.0, 55.0],  # 40: 640 + 2/8 * 320 = 720; 50: 960 + 4/9 * 320
    ("transformer", 2): [20.0, 30.0, 38.0, 45.0],  # 40: 960 + 2/7 * 320; 50: never (censored)
    ("mixer", 0): [45.0, 60.0, 70.0, 80.0],  # 40: 320, first evaluation (upper bound); 50: 320 + 5/15*320
    ("mixer", 1): [30.0, 50.0, 60.0, 70.0],  # 40: 320 + 10/20 * 320 = 480; 50: 640 exactly
    ("mixer", 2): [35.0, 45.0, 55.0, 65.0],  # 40: 320 + 5/10 * 320 = 480; 50: 640 + 5/10 * 320 = 800
}
EXPECTED = {40.0: {"transformer": [800.0, 720.0, 960 + 2 / 7 * 320], "mixer": [320.0, 480.0, 480.0]},
            50.0: {"transformer": [960.0, 960 + 4 / 9 * 320], "mixer": [320 + 5 / 15 * 320, 640.0, 800.0]}}


def evals(values: list[float], samples: list[float] = SAMPLES) -> pd.DataFrame:
    return pd.DataFrame({"step": range(1, len(values) + 1), "samples_seen": samples[:len(values)],
                         "toy_top1_seen": values})


def test_crossing_is_interpolated_between_the_bracketing_evaluations():
    assert crossing(evals([30.0, 38.0, 46.0, 60.0]), 40.0).samples == pytest.approx(640 + 2 / 8 * 320)
    assert crossing(evals([30.0, 40.0, 46.0, 60.0]), 40.0).samples == 640.0  # reached exactly at one
    # not monotone: the first time it reaches it, not the last
    assert crossing(evals([30.0, 45.0, 35.0, 55.0]), 40.0).samples == pytest.approx(320 + 10 / 15 * 320)
    # unevenly spaced evaluations (a resumed run) and a missing value in between are read as logged
    uneven = evals([10.0, math.nan, 30.0, 50.0], [100.0, 200.0, 400.0, 1000.0])
    assert crossing(uneven, 40.0).samples == pytest.approx(400 + 0.5 * 600)
    assert crossing(uneven, 20.0).samples == pytest.approx(100 + 0.5 * 300)  # the NaN row skipped


def test_a_run_that_never_reaches_it_is_censored_and_one_already_there_is_an_upper_bound():
    never = crossing(evals([10.0, 20.0, 39.9, 39.99]), 40.0)
    assert never is not None and never.samples is None
    first = crossing(evals([41.0, 50.0, 60.0, 70.0]), 40.0)
    assert first.samples == 320.0 and first.upper_bound
    assert not crossing(evals([30.0, 41.0, 50.0, 60.0]), 40.0).upper_bound
    assert crossing(evals([30.0, 41.0]).drop(columns="toy_top1_seen"), 40.0) is None  # no such metric
    assert crossing(pd.DataFrame(columns=["step", "samples_seen"]), 40.0) is None  # no evaluations


def _run_with_curve(root: Path, tower: str, seed: int) -> Path:
    """make_run's folder with its evaluation lines given seen top-1 ``CURVES[tower, seed]``."""
    run = make_run(root, tower, seed)
    curve = iter(CURVES[tower, seed])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        if "eval/toy_top1" in line:
            line["eval/toy_top1_seen"] = next(curve)
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    final = {key: value for key, value in lines[-1].items() if key != "samples_seen"}
    (run / "final_eval.json").write_text(json.dumps(final))
    return run


def _synthetic_arms() -> list[Arm]:
    class Run:  # what summarise reads of a run: its label and its evaluation rows
        def __init__(self, tower: str, seed: int):
            self.label, self.evals = f"{tower}-s{seed}", evals(CURVES[tower, seed])

    return [Arm(tower, [Run(tower, seed) for seed in range(3)]) for tower in ("transformer", "mixer")]


def t_interval_by_hand(values: list[float]) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return np.mean(values) - half, np.mean(values) + half


def welch_by_hand(a: list[float], b: list[float]) -> tuple[float, float]:
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    return np.mean(a) - np.mean(b) - half, np.mean(a) - np.mean(b) + half


def test_per_arm_mean_sd_t_interval_and_welch_difference_over_the_runs_that_reached_it():
    rows = {(row.threshold, row.arm): row for row in summarise(_synthetic_arms())}
    assert list(rows) == [(40.0, "transformer"), (40.0, "mixer"), (50.0, "transformer"), (50.0, "mixer")]
    for (threshold, arm), row in rows.items():
        expected = EXPECTED[threshold][arm]
        assert row.runs == 3 and row.reached == len(expected)
        assert row.samples == pytest.approx(expected)
        assert row.mean == pytest.approx(np.mean(expected))
        assert row.sd == pytest.approx(np.std(expected, ddof=1))
        assert (row.low, row.high) == pytest.approx(t_interval_by_hand(expected), rel=1e-9)
    assert rows[50.0, "transformer"].reached == 2  # seed 2 censored: the mean is over the 2 that reached
    assert rows[40.0, "mixer"].upper_bounds == 1 and rows[40.0, "transformer"].upper_bounds == 0
    for threshold in (40.0, 50.0):
        mixer, transformer = EXPECTED[threshold]["mixer"], EXPECTED[threshold]["transformer"]
        row = rows[threshold, "mixer"]
        assert row.baseline == "transformer" and rows[threshold, "transformer"].baseline == ""
        assert row.difference == pytest.approx(np.mean(mixer) - np.mean(transformer))
        assert (row.difference_low, row.difference_high) == pytest.approx(welch_by_hand(mixer, transformer),
                                                                          rel=1e-9)


def test_fewer_than_two_reached_gives_no_interval_and_no_run_reached_gives_no_number():
    arms = _synthetic_arms()
    for run in arms[0].runs:  # the Transformer's seeds 1 and 2 stop below 50: one run reaches it
        if run.label != "transformer-s0":
            run.evals["toy_top1_seen"] = run.evals["toy_top1_seen"].clip(upper=49.0)
    for run in arms[1].runs:  # only the Mixer's seed 0 (45 at its first evaluation) learns
        if run.label != "mixer-s0":
            run.evals["toy_top1_seen"] = 10.0
    rows = {(row.threshold, row.arm): row for row in summarise(arms)}
    one = rows[50.0, "transformer"]
    assert one.reached == 1 and one.mean == 960.0 and math.isnan(one.sd) and math.isnan(one.low)
    mixer = rows[50.0, "mixer"]
    assert mixer.reached == 1 and mixer.difference == pytest.approx(320 + 5 / 15 * 320 - 960.0)
    assert math.isnan(mixer.difference_low)  # one run a side: a difference, no interval
    shown = display_frame(summarise(arms)).set_index(["seen top-1 reaches", "arm"])
    assert shown.loc[("50%", "transformer"), "95% interval (t)"] == "–"
    assert shown.loc[("50%", "mixer"), "minus the first arm [95% Welch]"] == "-533 (no interval)"
    assert shown.loc[("40%", "mixer"), "runs that reached it"] == "1 of 3 (1 by the first evaluation)"
    never = {row.arm: row for row in summarise(arms, thresholds=(90.0,))}
    assert never["mixer"].reached == 0 and never["mixer"].runs == 3 and math.isnan(never["mixer"].mean)
    assert math.isnan(never["mixer"].difference)
    shown = display_frame(list(never.values())).set_index("arm")
    assert shown.loc["mixer"].tolist()[1:] == ["0 of 3", "–", "–", "–"]  # no number for censored runs
    assert summarise([Arm("x", [type("R", (), {"label": "r", "evals": evals([1.0]).drop(
        columns="toy_top1_seen")})()])]) == []  # no run has the metric: no table at all


def test_report_shows_the_table_in_its_headline_and_writes_the_csvs_outside_the_verdicts(tmp_path,
                                                                                   monkeypatch):
    for tower in ("transformer", "mixer"):  # make_run's all-class top-1 for a third seed
        monkeypatch.setitem(ARMS, tower, ARMS[tower][:2] + ({0: 20.0, 1: 22.0, 2: 24.0},) + ARMS[tower][3:])
    runs = [_run_with_curve(tmp_path / "runs", tower, seed) for tower in ("transformer", "mixer")
            for seed in range(3)]
    out = tmp_path / "report"
    result = report.write_report(runs, None, out, scores_required=False)
    assert result["primary"] == "toy_top1_seen"
    text = (out / "report.md").read_text()
    headline = text[text.index("## Headline"):text.index("## ", text.index("## Headline") + 3)]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in headline.splitlines()
            if line.startswith("| 50% ")]
    expected = EXPECTED[50.0]["transformer"]
    low, high = t_interval_by_hand(expected)
    assert rows[0][:5] == ["50%", "transformer-tiny", "2 of 3", f"{np.mean(expected):,.0f} ± "
                           f"{np.std(expected, ddof=1):,.0f}", f"[{low:,.0f}, {high:,.0f}]"]
    assert rows[1][2] == "3 of 3" and rows[1][5].startswith(
        f"{np.mean(EXPECTED[50.0]['mixer']) - np.mean(expected):+,.0f} [")
    assert "censored" in headline and "no verdict word" in headline
    table = pd.read_csv(out / "samples_to_accuracy.csv")
    censored = table[(table["threshold"] == 50.0) & (table["arm"] == "transformer-tiny")].iloc[0]
    assert (censored["runs"], censored["reached"]) == (3, 2)
    assert censored["samples_mean"] == pytest.approx(np.mean(expected))
    per_run = pd.read_csv(out / "runs.csv").set_index("run")
    assert per_run.loc[str(runs[0]), "samples_to_40_toy_top1_seen"] == pytest.approx(800.0)
    assert math.isnan(per_run.loc[str(runs[2]), "samples_to_50_toy_top1_seen"])  # censored: no number
    # a secondary measure, not a verdict: no row among the verdicts, so no family grows by it
    assert all("samples_to" not in verdict.metric for verdict in result["verdicts"])
    significance = text[text.index("## Is the difference real"):]
    assert "reaches" not in significance.split("## ", 2)[1]
