"""Throughput runner: a tiny pair against a tiny open_clip reference through the real CLI, FLOP/param
counts against towers.profile, and CLI errors."""

from __future__ import annotations

import json
import math

import open_clip
import pytest
import torch

import towers
from benchmarks.performance import throughput
from towers.precision import resolve_precision

TINY_OPEN_CLIP = {"embed_dim": 64,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                               "layers": 2}}


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "ViT-tp-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "ViT-tp-tiny"


def test_cli_times_both_models_and_writes_ratios(tmp_path, tiny_reference, capsys):
    throughput.main(["--model", "mixer+transformer-tiny",
                     "--batch-size", "4", "--steps", "2", "--warmup", "0", "--reference", tiny_reference,
                     "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ratio (ours / reference)" in out
    written = json.loads((tmp_path / "throughput" / "mixer+transformer-tiny-bs4-cpu.json").read_text())
    ours, reference = written["metrics"]["rows"]
    assert ours["model"] == "mixer+transformer-tiny" and reference["model"] == f"open_clip {tiny_reference}"
    for row in (ours, reference):
        assert row["train_samples_per_s"] == pytest.approx(4 / row["train_step_s"])
        assert row["train_samples_per_s"] > 0 and row["infer_samples_per_s"] > 0
    ratios = written["metrics"]["ratios"]
    assert ratios["train_samples_per_s"] == pytest.approx(ours["train_samples_per_s"] /
                                                          reference["train_samples_per_s"])
    assert ratios["total_params"] == pytest.approx(ours["total_params"] / reference["total_params"])
    profile = towers.profile("mixer+transformer-tiny")
    assert ours["total_params"] == profile["total_params"]
    assert ours["image_gflops"] == pytest.approx(profile["image_gflops"])
    # --precision auto resolves as training does: bf16 only where this CPU runs it natively
    assert written["settings"]["precision"] == resolve_precision("auto", "cpu")[0]
    assert written["benchmark"] == "throughput"


def test_reference_counts_agree_with_towers_profile_for_the_same_architecture():
    """open_clip's ViT-B-32 and our transformer-B-32 are the same network: same params and FLOPs."""
    with torch.device("meta"):
        reference = open_clip.create_model("ViT-B-32", device="meta")
    counted = towers.profile(reference)
    ours = towers.profile("transformer-B-32")
    assert counted["total_params"] == ours["total_params"] == 151_277_313
    assert counted["image_gflops"] == pytest.approx(ours["image_gflops"], rel=1e-6)
    assert counted["text_gflops"] == pytest.approx(ours["text_gflops"], rel=1e-6)


def test_inference_only_without_reference(tmp_path, capsys):
    # the spelling before the runner convention still works for one version, with a warning
    record = throughput.main(["--image-tower", "transformer", "--text-tower", "transformer",
                              "--variant", "tiny", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                              "--modes", "infer", "--reference", "none", "--no-save"])
    assert len(record["metrics"]["rows"]) == 1 and "ratios" not in record["metrics"]
    assert "train_samples_per_s" not in record["metrics"]["rows"][0]
    assert not (tmp_path / "throughput").exists()
    assert "--image-tower/--text-tower/--variant are deprecated; use --model NAME" in capsys.readouterr().err
    assert record["settings"]["model"] == "transformer-tiny"


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "lstm-tiny"], "no such model"),
    (["--model", "mixer-tiny", "--reference", "ViT-Nope"], "not an open_clip architecture"),
    (["--model", "mixer-tiny", "--batch-size", "1"], "at least 2"),
    (["--model", "mixer-tiny", "--warp-speed"], "--warp-speed"),
    (["--model", "mixer-tiny", "--precision", "fp64"], "--precision"),
    (["--text-tower", "mixer"], "--model NAME is required"),
    (["--model", "mixer-tiny", "--variant", "tiny"], "give one spelling"),
])
def test_cli_errors_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and fragment in err and err.count("\n") == 1 and "usage:" not in err


def test_one_timed_step_leaves_the_weights_one_trainer_step_leaves():
    """The contender's step is the trainer's: same AdamW groups, lr schedule, clipping and clamp. A big
    lr, a tight clip and a temperature above the cap make each of them show in the weights."""
    from accelerate import Accelerator

    from launch.config import Recipe
    from launch.trainer import ContrastiveStep, build_optimizer

    recipe = Recipe(lr=1e-2, warmup_steps=0, steps=10, grad_clip=0.05)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = towers.create_model("mixer-tiny")
        with torch.no_grad():
            model.logit_scale.fill_(5.0)  # above log(100): the clamp must pull it back
        models.append(model)
    trained, timed = models
    before = {name: p.detach().clone() for name, p in trained.named_parameters()}
    size = trained.image_size
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = towers.tokenize(["a red circle", "a blue square", "a green star", "a big red square"],
                             trained.context_length)

    accelerator = Accelerator(cpu=True)
    ddp_model, optimizer = accelerator.prepare(trained, build_optimizer(trained, recipe))
    ContrastiveStep(accelerator, ddp_model, optimizer, recipe)([(images, tokens)], 0)

    contender = throughput.Contender("timed", timed, lambda texts: tokens, 4, torch.device("cpu"), "fp32",
                                     recipe=recipe)
    contender.images, contender.tokens = images, tokens
    contender.train_step()

    for (name, a), (_, b) in zip(trained.named_parameters(), timed.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert trained.logit_scale.item() == pytest.approx(math.log(100))
    moved = [name for name, p in trained.named_parameters() if not torch.equal(p, before[name])]
    assert len(moved) == len(before)  # every parameter took the step (decayed or not)
