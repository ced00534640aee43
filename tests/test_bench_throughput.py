"""Throughput runner: a tiny pair against a tiny open_clip reference through the real CLI, FLOP/param
counts against towers.profile, and CLI errors."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

import towers
from benchmarks import throughput

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
    throughput.main(["--image-tower", "mixer", "--text-tower", "transformer", "--variant", "tiny",
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
    assert written["settings"]["precision"] == "fp32" and written["benchmark"] == "throughput"


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
    record = throughput.main(["--image-tower", "transformer", "--text-tower", "transformer",
                              "--variant", "tiny", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                              "--modes", "infer", "--reference", "none", "--no-save"])
    assert len(record["metrics"]["rows"]) == 1 and "ratios" not in record["metrics"]
    assert "train_samples_per_s" not in record["metrics"]["rows"][0]
    assert not (tmp_path / "throughput").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--image-tower", "lstm", "--text-tower", "mixer", "--variant", "tiny"], "no such model"),
    (["--image-tower", "mixer", "--text-tower", "mixer", "--variant", "tiny", "--reference", "ViT-Nope"],
     "not an open_clip architecture"),
    (["--image-tower", "mixer", "--text-tower", "mixer", "--batch-size", "1"], "at least 2"),
    (["--image-tower", "mixer", "--text-tower", "mixer", "--warp-speed"], "--warp-speed"),
    (["--text-tower", "mixer"], "--image-tower"),
])
def test_cli_errors_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and fragment in err
