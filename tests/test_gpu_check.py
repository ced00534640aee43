"""benchmarks.performance.gpu_check: without CUDA one line and exit 2; the peak table and MFU arithmetic;
and the whole check end to end on CPU at tiny size (the same functions a GPU runs, numbers checked against
towers.profile and the result's own rows)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import open_clip
import pytest
import torch
from test_bench_throughput import TINY_OPEN_CLIP

import towers
from benchmarks.performance import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exited:
        gpu_check.main([])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and "no CUDA device" in lines[0], lines


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("NVIDIA L4", None)])
def test_peak_table_by_device_name(name, peak):
    assert gpu_check.peak_tflops(name, None) == peak
    assert gpu_check.peak_tflops(name, 123.0) == 123.0  # --peak-tflops wins
    # the arithmetic: 44.4 GFLOP per sample x 9000 samples/s = 399.6 TFLOP/s
    assert gpu_check.mfu(44.4, 9000, peak) == (None if peak is None else pytest.approx(399.6 / peak))


@pytest.mark.slow
def test_the_whole_check_runs_on_cpu_at_tiny_size(tmp_path, tmp_path_factory, capsys):
    configs = tmp_path_factory.mktemp("open_clip_configs")
    (configs / "ViT-gc-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(configs)
    record = gpu_check.main(["--device", "cpu", "--variant", "tiny", "--reference", "ViT-gc-tiny",
                             "--batch-size", "4", "--steps", "2", "--warmup", "1", "--workers", "0",
                             "--loader-batches", "1", "--train-steps", "2", "--shard-samples", "16",
                             "--compile-backend", "eager", "--peak-tflops", "2",
                             "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    written = json.loads((tmp_path / "gpu_check" / "tiny-bs4-cpu.json").read_text())
    assert written["benchmark"] == "gpu_check" and written["metrics"] == json.loads(json.dumps(
        record["metrics"]))
    metrics = record["metrics"]
    rows = {row["model"]: row for row in metrics["steps"]["rows"]}
    assert list(rows) == ["mixer-tiny", "transformer-tiny", "open_clip ViT-gc-tiny"]
    profile = towers.profile("mixer-tiny")
    assert rows["mixer-tiny"]["train_gflops"] == pytest.approx(3 * (profile["image_gflops"] +
                                                                    profile["text_gflops"]))
    for row in rows.values():
        for phase in ("eager", "compiled"):
            rate = row[phase]["samples_per_s"]
            assert rate > 0 and row[phase]["mfu"] == pytest.approx(row["train_gflops"] * rate / 2000)
    ratios = metrics["steps"]["ratios"]["compiled"]
    assert ratios["transformer_over_open_clip"] == pytest.approx(
        rows["transformer-tiny"]["compiled"]["samples_per_s"] / rows["open_clip ViT-gc-tiny"]["compiled"][
            "samples_per_s"])
    assert [row["workers"] for row in metrics["loader"]["rows"]] == [0]
    decode = metrics["loader_device_decode"]  # the --decode-on-device loader, decoding on this CPU
    assert (decode["decoder"], decode["decode_device"]) == ("device", "cpu")
    assert [row["workers"] for row in decode["rows"]] == [0] and decode["rows"][0]["samples_per_s"] > 0
    assert metrics["device_decode_verdict"]["best_samples_per_s"] == decode["rows"][0]["samples_per_s"]
    verdict = metrics["loader_verdict"]
    assert verdict["keeps_up"] == (verdict["loader_over_step"] >= 1)
    assert verdict["fastest_step"]["samples_per_s"] == max(row[p]["samples_per_s"] for row in rows.values()
                                                           for p in ("eager", "compiled"))
    runs = {run["tower"]: run for run in metrics["training_runs"]}
    assert set(runs) == {"mixer", "transformer"}
    for tower, run in runs.items():
        assert run["steps"] == 2 and math.isfinite(run["final_loss"]) and run["samples_per_s"] > 0
        config = json.loads((tmp_path / "work" / "runs" / f"gpu-check-{tower}" / "config.json").read_text())
        assert config["experiment"]["recipe"]["train_data"].startswith(str(tmp_path / "work" / "shards"))
    assert ("keeps up" if verdict["keeps_up"] else "does NOT keep up") in out  # timing decides which
    assert "transformer / open_clip" in out and "train.py mixer, 2 steps" in out
    assert "JPEGs decoded on cpu (--decode-on-device)" in out
