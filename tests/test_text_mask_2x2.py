"""The text-mask 2x2: the factorial effects against hand-set seed scores with a known answer, and the
driver (one command, 8 arms, resumable) end to end with the training and scoring commands faked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from results import factorial
from results.drivers import reference, text_mask_2x2

# cell mean = 50 + 10 [mixer text] + 5 [caption] + 3 [mixer image] + 4 [mixer text and caption]
TRUE = {"text family (mixer - transformer), causal mask": 10.0,
        "text family (mixer - transformer), caption mask": 14.0,
        "text mask (caption - causal), transformer text": 5.0,
        "text mask (caption - causal), mixer text": 9.0,
        "text family x mask interaction": 4.0, "image family (mixer - transformer)": 3.0}


def cell_mean(image: str, text: str, mask: str) -> float:
    mixer_text, caption = text == "mixer", mask == "caption"
    return 50 + 10 * mixer_text + 5 * caption + 3 * (image == "mixer") + 4 * (mixer_text and caption)


def hand_set_frame(seeds: int = 2) -> pd.DataFrame:
    rows = [{"image_family": image, "text_family": text, "text_mask": mask, "seed": seed,
             "toy top-1": cell_mean(image, text, mask) + (1.0 if seed % 2 == 0 else -1.0)}
            for image in factorial.FAMILIES for text in factorial.FAMILIES for mask in factorial.MASKS
            for seed in range(seeds)]
    return pd.DataFrame(rows)


def test_factorial_effects_and_intervals_have_the_known_answer():
    # residuals +-1 in every cell: s_c^2 = 2 (ddof 1, n = 2). A text-family or mask effect averages 2
    # image cells per side (weights +-1/2): Welch SE = sqrt(4 * 0.25 * 2 / 2) = 1, df = 1 / (4 * 0.0625) = 4
    effects = {effect.effect: effect for effect in factorial.effects(hand_set_frame(), "toy top-1")}
    # both image families at each mask also form the towers 2x2: no image x text family interaction here
    assert {"image x text family interaction, causal mask", "both towers (mixer - transformer), caption mask",
            *TRUE} <= set(effects)
    assert effects["image x text family interaction, causal mask"].estimate == pytest.approx(0, abs=1e-12)
    effects = {name: effects[name] for name in TRUE}
    half_widths = {name: stats.t.ppf(0.975, 4) * 1.0 for name in TRUE}
    # the interaction: weights +-1/2 on all 8 cells (SE sqrt(2), df 8); the image family +-1/4 (df 8)
    half_widths["text family x mask interaction"] = stats.t.ppf(0.975, 8) * math.sqrt(8 * 0.25 * 2 / 2)
    half_widths["image family (mixer - transformer)"] = stats.t.ppf(0.975, 8) * math.sqrt(8 / 16 * 2 / 2)
    for name, effect in effects.items():
        assert effect.runs == 2 * (8 if name in ("text family x mask interaction",
                                                 "image family (mixer - transformer)") else 4)
        assert effect.paired_seeds == 2
        assert effect.df == pytest.approx(8 if name in ("text family x mask interaction",
                                                        "image family (mixer - transformer)") else 4)
        assert effect.estimate == pytest.approx(TRUE[name], abs=1e-12)
        assert effect.paired_estimate == pytest.approx(TRUE[name], abs=1e-12)
        assert (effect.high - effect.low) / 2 == pytest.approx(half_widths[name], rel=1e-12)


def test_one_image_family_gives_every_text_effect_and_no_image_effect():
    frame = hand_set_frame(seeds=3)
    frame = frame[frame["image_family"] == "transformer"]
    effects = {effect.effect: effect for effect in factorial.effects(frame, "toy top-1")}
    assert "image family (mixer - transformer)" not in effects
    assert not [name for name in effects if "image x text" in name or "both towers" in name]
    assert effects["text mask (caption - causal), mixer text"].estimate == pytest.approx(9.0)


# the towers 2x2 at the caption mask: 50 + 30 [mixer image] + 10 [mixer text] - 10 [both mixer]
TOWERS_TRUE = {"both towers (mixer - transformer), caption mask": 30.0,
               "image family (mixer - transformer), transformer text, caption mask": 30.0,
               "image family (mixer - transformer), mixer text, caption mask": 20.0,
               "text family (mixer - transformer), transformer image, caption mask": 10.0,
               "text family (mixer - transformer), mixer image, caption mask": 0.0,
               "image family (mixer - transformer), caption mask, mean over text families": 25.0,
               "image x text family interaction, caption mask": -10.0,
               "text family (mixer - transformer), caption mask": 5.0}


def towers_frame(seed: int = 0) -> pd.DataFrame:
    """Cells with unequal seeds and variances (the ViT-image cells 10x noisier), one shared seed set."""
    rng = np.random.default_rng(seed)
    rows = []
    for image in factorial.FAMILIES:
        for text in factorial.FAMILIES:
            matched = image == text
            seeds = range(10, 23) if matched else range(10, 14)  # reference runs vs the cross cells
            mean = 50 + 30 * (image == "mixer") + 10 * (text == "mixer") - 10 * (matched and image == "mixer")
            noise = rng.normal(0, 5.0 if image == "transformer" else 0.5, len(seeds))
            noise -= noise.mean()  # the cell means are exact, so the estimates are
            rows += [{"image_family": image, "text_family": text, "text_mask": "caption", "seed": s,
                      "toy top-1": mean + e} for s, e in zip(seeds, noise, strict=True)]
    return pd.DataFrame(rows)


def test_the_towers_2x2_decomposes_the_headline_gap():
    effects = {effect.effect: effect for effect in factorial.effects(towers_frame(), "toy top-1")}
    assert set(effects) == set(TOWERS_TRUE)
    for name, effect in effects.items():
        assert effect.estimate == pytest.approx(TOWERS_TRUE[name], abs=1e-9), name
    gap = effects["both towers (mixer - transformer), caption mask"].estimate
    image = effects["image family (mixer - transformer), transformer text, caption mask"].estimate
    text = effects["text family (mixer - transformer), mixer image, caption mask"].estimate
    assert gap == pytest.approx(image + text)
    # paired over the seeds every cell of the contrast has: 10-13 wherever a cross cell is in it
    assert effects["both towers (mixer - transformer), caption mask"].paired_seeds == 13
    assert {effect.paired_seeds for name, effect in effects.items() if "both towers" not in name} == {4}
    assert effects["both towers (mixer - transformer), caption mask"].runs == 26


def test_a_two_cell_contrast_is_scipys_welch_and_paired_t_test():
    frame = towers_frame(seed=3)
    effects = {effect.effect: effect for effect in factorial.effects(frame, "toy top-1")}
    cell = {key: group.set_index("seed")["toy top-1"]
            for key, group in frame.groupby(["image_family", "text_family"])}
    mixer, transformer = cell[("mixer", "mixer")], cell[("transformer", "transformer")]
    welch = stats.ttest_ind(mixer, transformer, equal_var=False)
    low, high = welch.confidence_interval(0.95)
    effect = effects["both towers (mixer - transformer), caption mask"]
    assert (effect.low, effect.high, effect.df) == pytest.approx((low, high, welch.df), rel=1e-10)
    # text family within the Mixer image tower, 13 vs 4 runs: Welch, and paired on seeds 10-13
    mixer_text, transformer_text = cell[("mixer", "mixer")], cell[("mixer", "transformer")]
    effect = effects["text family (mixer - transformer), mixer image, caption mask"]
    welch = stats.ttest_ind(mixer_text, transformer_text, equal_var=False)
    assert (effect.low, effect.high) == pytest.approx(welch.confidence_interval(0.95), rel=1e-10)
    shared = transformer_text.index
    pair = stats.ttest_rel(mixer_text[shared], transformer_text[shared])
    assert (effect.paired_low, effect.paired_high) == pytest.approx(pair.confidence_interval(0.95), rel=1e-10)
    differences = mixer_text[shared] - transformer_text[shared]
    assert effect.paired_estimate == pytest.approx(float(differences.mean()))


def test_the_interactions_standard_error_is_the_hc2_sandwich():
    # independent reference: OLS on cell dummies with the HC2 sandwich covariance (each residual scaled
    # by 1 / (1 - leverage)), the 4-cell interaction contrast's standard error from it
    frame = towers_frame(seed=5)
    keys = sorted(set(zip(frame["image_family"], frame["text_family"], strict=True)))
    design = np.array([[float((i, t) == key) for key in keys]
                       for i, t in zip(frame["image_family"], frame["text_family"], strict=True)])
    y = frame["toy top-1"].to_numpy()
    beta = np.linalg.lstsq(design, y, rcond=None)[0]
    residual = y - design @ beta
    bread = np.linalg.inv(design.T @ design)
    leverage = np.einsum("ij,jk,ik->i", design, bread, design)
    covariance = bread @ (design.T * (residual ** 2 / (1 - leverage))) @ design @ bread
    sign = {"mixer": 1.0, "transformer": -1.0}
    weights = np.array([sign[i] * sign[t] for i, t in keys])
    reference_se = math.sqrt(weights @ covariance @ weights)
    effect = {e.effect: e for e in factorial.effects(frame, "toy top-1")}[
        "image x text family interaction, caption mask"]
    assert effect.estimate == pytest.approx(float(weights @ beta), abs=1e-9)
    standard_error = (effect.high - effect.low) / 2 / stats.t.ppf(0.975, effect.df)
    assert standard_error == pytest.approx(reference_se, rel=1e-10)
    # unequal variances: the pooled-variance error the old model gave is not this one
    pooled = math.sqrt((residual ** 2).sum() / (len(y) - 4) * sum(w * w / n for w, n in
                       zip(weights, design.sum(axis=0), strict=True)))
    assert abs(pooled - reference_se) > 0.1 * reference_se


def test_matched_cells_alone_form_no_2x2():
    frame = towers_frame()
    matched = frame[frame["image_family"] == frame["text_family"]]
    assert factorial.effects(matched, "toy top-1") == []


def _fake_run(command: list[str], log: Path) -> float:
    """Stands in for one training or scoring subprocess: writes what it would write."""
    if "launch/train.py" in command:
        flag = {name: command[command.index(name) + 1] for name in
                ("--image-tower", "--text-tower", "--text-mask", "--seed", "--runs-dir", "--name")}
        run = Path(flag["--runs-dir"]) / flag["--name"]
        run.mkdir(parents=True)
        recipe = {"seed": int(flag["--seed"]), "text_mask": flag["--text-mask"], "steps": 2}
        model_name = f"{flag['--image-tower']}+{flag['--text-tower']}-tiny"
        config = {"name": flag["--name"], "model_name": model_name,
                  "experiment": {"image_tower": flag["--image-tower"], "text_tower": flag["--text-tower"],
                                 "variant": "tiny", "token_mixing": "caption", "recipe": recipe},
                  "recipe_sha256": json.dumps(recipe), "flops_per_sample": {"train_gflops": 1.0}}
        (run / "config.json").write_text(json.dumps(config))
        line = {"step": 2, "samples_seen": 256, "loss": 1.0, "lr": 1e-3, "logit_scale": 14.0,
                "samples_per_s": 10.0, "data_wait_frac": 0.0, "grad_norm": 1.0, "skipped": {},
                "nonfinite_steps": 0}
        (run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
        cell = (flag["--image-tower"], flag["--text-tower"], flag["--text-mask"])
        top1 = cell_mean(*cell) + int(flag["--seed"])
        final = {"step": 2, "eval/toy_top1": top1, "eval/toy_top1_seen": top1 + 1,
                 "eval/toy_top1_held_out": top1 - 1}
        (run / "final_eval.json").write_text(json.dumps(final))
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "step_00000002.pt").write_bytes(b"x")
    _fake_run.calls.append(command)
    return 0.0


def test_the_driver_runs_8_arms_resumes_and_reports_the_factorial(tmp_path, monkeypatch, capsys):
    _fake_run.calls = []
    monkeypatch.setattr(reference, "_run", _fake_run)
    argv = ["--out", str(tmp_path), "--seeds", "0", "1", "--skip-sts", "--skip-word-order", "--allow-dirty",
            "--train-flags", "--steps 2"]
    result = text_mask_2x2.main(argv)
    trained = [c for c in _fake_run.calls if "launch/train.py" in c]
    assert len(trained) == 16 and all("--steps" in c and "--text-mask" in c for c in trained)
    assert len(list((tmp_path / "runs").glob("*-seed*"))) == 16
    assert (tmp_path / "runs" / "mixer-text-causal-transformer-image-seed1" / "final_eval.json").is_file()
    table = result["factorial"]
    for label in ("all classes", "seen classes", "held-out classes"):
        toy = table[table["metric"] == f"toy zero-shot top-1, {label} (%)"].set_index("effect")
        # a constant offset per split moves no contrast
        assert float(toy.loc["text family x mask interaction", "estimate"]) == pytest.approx(4.0), label
        assert float(toy.loc["image family (mixer - transformer)", "estimate"]) == pytest.approx(3.0), label
    assert "Factorial analysis" in (tmp_path / "report" / "report.md").read_text()
    _fake_run.calls = []
    text_mask_2x2.main(argv)  # resumed: every run had finished, nothing is trained again
    assert not [c for c in _fake_run.calls if "launch/train.py" in c]


def test_matched_runs_train_only_the_cross_cells_and_report_the_towers_2x2(tmp_path, monkeypatch):
    _fake_run.calls = []
    monkeypatch.setattr(reference, "_run", _fake_run)
    common = ["--seeds", "0", "1", "--text-masks", "caption", "--skip-sts", "--skip-word-order",
              "--allow-dirty"]
    # the matched cells, as a committed comparison would hold them (here with a causal arm beside)
    text_mask_2x2.main(["--out", str(tmp_path / "ref"), *common, "--no-report", "--text-masks", "causal",
                        "caption"])
    _fake_run.calls = []
    result = text_mask_2x2.main(["--out", str(tmp_path / "towers"), *common,
                                 "--matched-runs", str(tmp_path / "ref" / "runs")])
    trained = {tuple(c[c.index(flag) + 1] for flag in ("--image-tower", "--text-tower", "--text-mask"))
               for c in _fake_run.calls if "launch/train.py" in c}
    assert trained == {("mixer", "transformer", "caption"), ("transformer", "mixer", "caption")}
    toy = result["factorial"][result["factorial"]["metric"] == "toy zero-shot top-1, all classes (%)"]
    toy = toy.set_index("effect")
    # cell_mean: the image family moves every cell by +3, the text family by +14 under caption
    gap = toy.loc["both towers (mixer - transformer), caption mask"]
    assert float(gap["estimate"]) == pytest.approx(17.0)
    assert float(toy.loc["image x text family interaction, caption mask", "estimate"]) == pytest.approx(0.0)
    assert gap["runs"] == 4  # the matched cells' causal arms are left out
    with pytest.raises(SystemExit) as error:
        text_mask_2x2.main(["--out", str(tmp_path / "x"), *common, "--matched-runs", str(tmp_path / "none")])
    assert error.value.code == 2
