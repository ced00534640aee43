"""The text-mask 2x2: the factorial effects against hand-set seed scores with a known answer, and the
driver (one command, 8 arms, resumable) end to end with the training and scoring commands faked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from results import factorial, reference, text_mask_2x2

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
    # residuals +-1 in every cell: s^2 = 16 / (16 - 8) = 2; a text-family or mask effect averages
    # 2 image cells per side (weights +-1/2, n = 2): SE = sqrt(2 * 4 * 0.25 / 2) = 1
    effects = {effect.effect: effect for effect in factorial.effects(hand_set_frame(), "toy top-1")}
    assert set(effects) == set(TRUE)
    t = stats.t.ppf(0.975, 8)
    half_widths = {name: t * 1.0 for name in TRUE}
    # the interaction: weights +-1/2 on all 8 cells; the image family: +-1/4 on all 8
    half_widths["text family x mask interaction"] = t * math.sqrt(2 * 8 * 0.25 / 2)
    half_widths["image family (mixer - transformer)"] = t * math.sqrt(2 * 8 * (1 / 16) / 2)
    for name, effect in effects.items():
        assert effect.df == 8 and effect.runs == 16
        assert effect.estimate == pytest.approx(TRUE[name], abs=1e-12)
        assert (effect.high - effect.low) / 2 == pytest.approx(half_widths[name], rel=1e-12)


def test_one_image_family_gives_every_text_effect_and_no_image_effect():
    frame = hand_set_frame(seeds=3)
    frame = frame[frame["image_family"] == "transformer"]
    effects = {effect.effect: effect for effect in factorial.effects(frame, "toy top-1")}
    assert "image family (mixer - transformer)" not in effects
    assert effects["text mask (caption - causal), mixer text"].estimate == pytest.approx(9.0)
    assert effects["text mask (caption - causal), mixer text"].df == 12 - 4


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
    argv = ["--out", str(tmp_path), "--seeds", "0", "1", "--skip-sts", "--skip-word-order",
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
