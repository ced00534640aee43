"""results.report says when a difference is real and whether it matters (paired or Welch t over seeds,
no verdict from one seed without a seed spread, Holm / BH for the secondaries, seeds needed for 80%
power), shows ImageNet zero-shot in the headline (with CIs) and as curves, and the README's comparison
sentences are the committed reference report's."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from test_report import ARMS, make_run, write_score

from results import report, significance
from results.significance import welch_interval

REPO = Path(__file__).resolve().parents[1]


def test_welch_interval_matches_the_textbook_formula():
    a, b = [31.0, 33.5, 32.0, 30.5], [20.0, 26.0, 23.0]
    diff, low, high = welch_interval(a, b)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((diff - half, diff + half), rel=1e-9)


def _verdicts(result) -> dict[str, str]:
    return {v.metric: v.verdict for v in result["verdicts"]}


def _set_top1(monkeypatch, tower: str, values: dict[int, float]) -> None:
    monkeypatch.setitem(ARMS, tower, ARMS[tower][:2] + (values,) + ARMS[tower][3:])


def test_shared_seeds_are_paired_and_the_primary_comes_first(tmp_path, monkeypatch):
    # toy top-1 (the primary of toy v4 runs): mixer 30 / 31 / 32 vs transformer 20 / 22 / 21 by seed
    _set_top1(monkeypatch, "mixer", {0: 30.0, 1: 31.0, 2: 32.0})
    _set_top1(monkeypatch, "transformer", {0: 20.0, 1: 22.0, 2: 21.0})
    runs = [make_run(tmp_path / "runs", tower, seed) for tower in ("transformer", "mixer")
            for seed in (0, 1, 2)]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    assert result["primary"] == "toy_top1"
    top1 = result["verdicts"][0]
    assert top1.metric == "toy_top1" and top1.role == "primary" and top1.verdict == "better"
    differences = [10.0, 9.0, 11.0]  # the paired t interval by hand: mean +- t(0.975, 2) * sd / sqrt(3)
    half = stats.t.ppf(0.975, 2) * np.std(differences, ddof=1) / math.sqrt(3)
    assert (top1.difference, top1.low, top1.high) == pytest.approx((10.0, 10.0 - half, 10.0 + half))
    assert top1.method == "paired t over 3 shared seeds"
    assert top1.seeds_needed == significance.seeds_for_power(10.0, 1.0, paired=True)
    verdicts = _verdicts(result)
    assert verdicts["final_loss"] == ""  # one training batch's loss: a diagnostic, never a verdict
    assert verdicts["in_training_samples_per_s"] == ""  # timed under unknown conditions: no word
    text = (tmp_path / "report" / "report.md").read_text()
    first = text.split("\n\n")[1]  # the sentence under the title
    assert first == (f"**Primary endpoint, toy top-1 at 1,280 samples seen: mixer-tiny 31.0 vs "
                     f"transformer-tiny 21.0 (3 seeds each), difference +10.0 points, 95% interval "
                     f"[{10 - half:+.1f}, {10 + half:+.1f}] (paired t over 3 shared seeds): "
                     "mixer-tiny is better.**")
    assert result["summary"].startswith("mixer-tiny vs transformer-tiny: wins toy top-1 by 10.0 [")
    assert f"In one sentence: {result['summary']}" in text


def test_seeds_not_shared_use_welch(tmp_path, monkeypatch):
    _set_top1(monkeypatch, "mixer", {0: 30.0, 1: 31.0, 2: 32.0, 3: 33.0})
    runs = [make_run(tmp_path / "runs", "transformer", seed) for seed in (0, 1)]
    runs += [make_run(tmp_path / "runs", "mixer", seed) for seed in (2, 3)]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    top1 = result["verdicts"][0]
    assert top1.method == "Welch t, 2 vs 2 seeds"
    assert (top1.difference, top1.low, top1.high) == pytest.approx(welch_interval([32.0, 33.0], [20.0, 26.0]))


def test_a_significant_difference_under_the_practical_minimum_is_negligible(tmp_path, monkeypatch):
    _set_top1(monkeypatch, "mixer", {0: 20.5, 1: 26.6, 2: 21.4})
    _set_top1(monkeypatch, "transformer", {0: 20.0, 1: 26.0, 2: 21.0})
    runs = [make_run(tmp_path / "runs", tower, seed) for tower in ("transformer", "mixer")
            for seed in (0, 1, 2)]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    top1 = result["verdicts"][0]
    assert top1.low > 0 and top1.difference == pytest.approx(0.5) and top1.verdict == "negligible"
    wider = report.write_report(runs, None, tmp_path / "r2", scores_required=False,
                                min_differences={"toy_top1": 0.25})
    assert wider["verdicts"][0].verdict == "better"


@pytest.mark.parametrize(("mixer_top1", "with_spread"), [(40.0, "better"), (28.0, "inconclusive"),
                                                         (8.0, "worse")])
def test_one_seed_gives_the_eval_set_interval_and_no_verdict_unless_a_spread_is_given(
        tmp_path, monkeypatch, mixer_top1, with_spread):
    # make_run writes CI = value +- 5: each run's bootstrap se is 5 / 1.96, the difference's sqrt(2) x that
    _set_top1(monkeypatch, "mixer", {0: mixer_top1})
    runs = [make_run(tmp_path / "runs", tower, 0) for tower in ("transformer", "mixer")]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    assert set(_verdicts(result).values()) == {""}  # one seed per arm: no architecture verdict at all
    top1 = result["verdicts"][0]
    difference = mixer_top1 - 20.0
    half = 5 * math.sqrt(2)
    assert (top1.low, top1.high) == pytest.approx((difference - half, difference + half))
    assert "one seed per arm" in top1.reason and top1.seeds_needed is None
    assert "no architecture verdict" in result["primary_sentence"]
    spread = significance.SeedSpread(3.0, "transformer seeds 10-22")
    given = report.write_report(runs, None, tmp_path / "r2", scores_required=False, seed_spread=spread)
    top1 = given["verdicts"][0]
    half = stats.norm.ppf(0.975) * 3.0 * math.sqrt(2)
    assert (top1.low, top1.high) == pytest.approx((difference - half, difference + half))
    assert top1.verdict == with_spread
    assert "seed sd 3 from transformer seeds 10-22" in given["primary_sentence"]
    assert top1.seeds_needed == significance.seeds_for_power(difference, 3.0)


def test_seed_sd_from_other_seeds_of_the_recipe_sets_the_one_seed_interval(tmp_path, monkeypatch):
    _set_top1(monkeypatch, "transformer", {0: 20.0, 1: 22.0, 2: 26.0})
    runs = [make_run(tmp_path / "runs", tower, 0) for tower in ("transformer", "mixer")]
    others = [make_run(tmp_path / "others", "transformer", seed) for seed in (1, 2)]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False, seed_runs=others)
    top1 = result["verdicts"][0]
    sd = math.sqrt(8.0)  # 22 and 26: sample sd, 1 degree of freedom
    half = stats.t.ppf(0.975, 1) * sd * math.sqrt(2)
    assert (top1.low, top1.high) == pytest.approx((10.0 - half, 10.0 + half))
    assert "toy_top1 over 2 runs of transformer-tiny" in top1.method and top1.verdict == "inconclusive"
    other_recipe = [make_run(tmp_path / "lr", "transformer", seed, lr=0.01) for seed in (1, 2)]
    with pytest.raises(report.ReportInputError, match="--seed-sd-from: runs trained with different recipes"):
        report.write_report(runs, None, tmp_path / "r2", scores_required=False, seed_runs=other_recipe)


def test_seeds_for_power_matches_published_tables():
    # G*Power / Cohen (1988): two-sided t test at 0.05 and 80% power, effect size d = difference / sd
    assert [significance.seeds_for_power(d, 1.0) for d in (0.2, 0.5, 0.8)] == [394, 64, 26]
    assert significance.seeds_for_power(0.5, 1.0, paired=True) == 34  # paired: 34 pairs
    assert significance.seeds_for_power(0.0, 1.0) is None


def test_holm_and_benjamini_hochberg_adjust_the_secondaries():
    p = [0.01, 0.04, 0.03, 0.005]
    assert significance.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])  # 3p, max(2p, ...), p, 4p
    assert significance.adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert significance.adjust(p, "none") == p


def _add_imagenet_evals(run: Path, top1: float) -> None:
    """In-training ImageNet evaluations next to the toy ones (what --imagenet-val logs)."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        if "eval/toy_top1" in line:
            value = top1 * line["step"] / 40
            line.update({"eval/imagenet_top1": value, "eval/imagenet_top5": 3 * value,
                         "eval/imagenet_n": 1000, "eval/imagenet_top1_ci95": [value - 1, value + 1]})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    final = {key: value for key, value in lines[-1].items() if key != "samples_seen"}
    (run / "final_eval.json").write_text(json.dumps(final))


def test_headline_has_imagenet_top1_top5_with_cis_and_two_curve_panels(tmp_path):
    runs = []
    for tower, values in (("transformer", (4.0, 6.0)), ("mixer", (8.0, 9.0))):
        for seed, top1 in enumerate(values):
            run = make_run(tmp_path / "runs", tower, seed)
            _add_imagenet_evals(run, top1)
            runs.append(run)
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    headline = result["headline"]
    mixer = headline.loc["mixer-tiny"]
    assert mixer["imagenet_top1_mean"] == pytest.approx(8.5)
    assert mixer["imagenet_top5_mean"] == pytest.approx(25.5)
    low, high = stats.t.interval(0.95, 1, loc=8.5, scale=stats.sem([8.0, 9.0]))
    assert (mixer["imagenet_top1_ci_lo"], mixer["imagenet_top1_ci_hi"]) == pytest.approx((low, high))
    assert result["primary"] == "imagenet_top1"  # at scale the primary is ImageNet, not the toy
    shown = result["headline_table"].set_index("metric").loc["ImageNet zero-shot top-1 (%)", "mixer-tiny"]
    assert shown == f"8.50 ± 0.71 [{low:.2f}, {high:.2f}]"
    # toy and ImageNet panels side by side: twice the width of a toy-only figure
    toy_only = tmp_path / "toy_only"
    report.write_report([make_run(tmp_path / "plain", "mixer", 0)], None, toy_only, scores_required=False)
    both = Image.open(tmp_path / "report" / "top1_vs_samples.png").size
    one = Image.open(toy_only / "top1_vs_samples.png").size
    assert both[0] == 2 * one[0] and both[1] == one[1]


def test_every_checkpoint_scores_become_the_imagenet_curve(tmp_path):
    run = make_run(tmp_path / "runs", "mixer", 0)
    sha = json.loads((run / "config.json").read_text())["recipe_sha256"]
    scores = tmp_path / "scores"
    for step, top1 in ((10, 1.0), (20, 2.5), (40, 4.0)):  # what --every-checkpoint writes, one file a step
        write_score(scores, "imagenet_zeroshot", f"{run.name}-step_{step:08d}",
                    {"top1": top1, "top5": 3 * top1, "top1_ci95": [top1 - 1, top1 + 1], "n": 1000},
                    {"source": "checkpoint", "checkpoint": str(run / "checkpoints" / f"step_{step:08d}.pt"),
                     "step": step, "samples_seen": step * 32}, sha)
    result = report.write_report([run], scores, tmp_path / "report")
    assert result["headline"].loc["mixer-tiny", "imagenet_top1_mean"] == 4.0  # the last step
    assert not [w for w in result["warnings"] if "later score" in w]  # earlier steps are curve points
    from results.runs import load_run
    from results.scores import add_checkpoint_evals, assign, load_scores

    loaded = load_run(run)
    all_scores = load_scores(scores)
    assign(all_scores, [loaded], [])
    add_checkpoint_evals(all_scores, [loaded])
    curve = loaded.evals.dropna(subset=["imagenet_top1"])
    assert curve["samples_seen"].tolist() == [320, 640, 1280]
    assert curve["imagenet_top1"].tolist() == [1, 2.5, 4]
    assert loaded.evals["toy_top1"].notna().sum() == 4  # the toy evaluations are still all there


def test_readme_comparison_sentences_are_the_reference_reports():
    text = (REPO / "results" / "reference" / "report" / "report.md").read_text()
    readme = " ".join((REPO / "README.md").read_text().split())
    assert re.search(r"^\*\*(Primary endpoint.+)\*\*$", text, re.MULTILINE).group(1) in readme
    assert re.search(r"^In one sentence: (.+)$", text, re.MULTILINE).group(1) in readme
