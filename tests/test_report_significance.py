"""results.report says when a difference is real (Welch over seeds, bootstrap CIs with one seed), shows
ImageNet zero-shot in the headline (with CIs) and as curves (in training or per saved step), and the
README's comparison sentence is the committed reference report's."""

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


def test_several_seeds_welch_decides_better_worse_and_tie(tmp_path, monkeypatch):
    # toy top-1: mixer 30-32 vs transformer 20-22 per seed: a real difference
    monkeypatch.setitem(ARMS, "mixer", ARMS["mixer"][:2] + ({0: 30.0, 1: 31.0, 2: 32.0},) + ARMS["mixer"][3:])
    monkeypatch.setitem(ARMS, "transformer",
                        ARMS["transformer"][:2] + ({0: 20.0, 1: 22.0, 2: 21.0},) + ARMS["transformer"][3:])
    runs = [make_run(tmp_path / "runs", tower, seed) for tower in ("transformer", "mixer")
            for seed in (0, 1, 2)]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    verdicts = _verdicts(result)
    assert verdicts["toy_top1"] == "better"  # mixer (the second arm) vs transformer (the first)
    # loss 2.3 / 2.2 / 2.1 vs 2.5 / 2.4 / 2.3: -0.2 +- 0.23 (t with 4 df): not real
    loss = next(v for v in result["verdicts"] if v.metric == "final_loss")
    assert loss.verdict == "tie" and loss.difference == pytest.approx(-0.2) and loss.low < 0 < loss.high
    assert significance._word(-0.3, -0.1, higher_is_better=False) == "better"  # a lower loss is better
    assert verdicts["in_training_samples_per_s"] == "tie"  # 10 + seed on both arms: identical
    top1 = next(v for v in result["verdicts"] if v.metric == "toy_top1")
    assert top1.difference == pytest.approx(10.0) and top1.low > 0 and "Welch t, 3 vs 3" in top1.method
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Is the difference real?" in text and result["summary"] in text
    assert result["summary"].startswith("mixer-tiny vs transformer-tiny (95% intervals): better on ")
    assert "toy zero-shot top-1" in result["summary"].split(". a tie")[0]


@pytest.mark.parametrize(("mixer_top1", "expected"), [(40.0, "better"), (28.0, "tie"), (8.0, "worse")])
def test_one_seed_the_runs_bootstrap_cis_decide(tmp_path, monkeypatch, mixer_top1, expected):
    # make_run writes CI = value +- 5: transformer 20 -> [15, 25]
    monkeypatch.setitem(ARMS, "mixer", ARMS["mixer"][:2] + ({0: mixer_top1},) + ARMS["mixer"][3:])
    runs = [make_run(tmp_path / "runs", tower, 0) for tower in ("transformer", "mixer")]
    result = report.write_report(runs, None, tmp_path / "report", scores_required=False)
    verdicts = _verdicts(result)
    assert verdicts["toy_top1"] == expected
    assert set(verdicts) == {"toy_top1"}  # no other metric has a per-run CI: one seed decides nothing else


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
    shown = result["headline_table"].set_index("arm").loc["mixer-tiny", "ImageNet zero-shot top-1 (%)"]
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


def test_readme_comparison_sentence_is_the_reference_reports():
    text = (REPO / "results" / "reference" / "report" / "report.md").read_text()
    sentence = re.search(r"^In one sentence: (.+)$", text, re.MULTILINE).group(1)
    assert sentence in " ".join((REPO / "README.md").read_text().split())
