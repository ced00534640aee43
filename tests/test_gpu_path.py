"""The GPU path, on a CUDA device (marker `gpu`: skipped without one): bf16 autocast on CUDA, pinned
uint8 batches finished on the device with the CPU's bits, a step that never synchronises, the
compiled model in a one-process NCCL group, launch/train.py with --compile, and the device JPEG decoder
never writing into memory the training stream still reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from accelerate import Accelerator
from open_clip.loss import ClipLoss
from torch.nn.parallel import DistributedDataParallel

import towers
from launch import data as launch_data
from launch.config import Recipe
from launch.trainer import ContrastiveStep, build_optimizer, compile_model, micro_batch_stream

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


def _batch(seed: int, device=CUDA) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    tokens = towers.tokenize([f"a green shape number {i}" for i in range(16)], 16)
    return [(images.to(device), tokens.to(device))]


def _step(precision: str, name: str = "transformer+mixer-tiny") -> tuple[ContrastiveStep, torch.nn.Module]:
    torch.manual_seed(0)
    model = towers.create_model(name, text_overrides={"context_length": 16})
    accelerator = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16"}[precision])
    recipe = Recipe(batch_size=16, warmup_steps=1, precision=precision)
    ddp_model, optimizer = accelerator.prepare(model, build_optimizer(model, recipe))
    return ContrastiveStep(accelerator, ddp_model, optimizer, recipe), model


def test_bf16_autocast_on_cuda_takes_the_loss_in_fp32_and_tracks_fp32():
    losses = {}
    for precision in ("fp32", "bf16"):
        step, _ = _step(precision)
        image_features, text_features, scale = step._forward(*_batch(0)[0])
        assert image_features.dtype == text_features.dtype == torch.float32
        losses[precision] = step.loss(image_features, text_features, scale).item()
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], abs=2e-2)


def test_pinned_uint8_batches_are_finished_on_the_gpu_with_the_cpu_bits(tmp_path):
    from test_train_loader import write_dataset

    spec, _ = write_dataset(tmp_path / "shards")
    common = dict(image_size=16, batch_size=8, workers=1, seed=0)
    expected = next(iter(launch_data.get_train_loader(spec, **common)))[0]
    raw = launch_data.get_train_loader(spec, **common, pin_memory=True, finish_images=False)
    images, _ = next(iter(raw))
    assert images.dtype == torch.uint8 and images.is_pinned()
    [(on_gpu, tokens)] = next(micro_batch_stream(raw, 1, CUDA, {"data_wait": 0.0}, raw.finish.to(CUDA)))
    assert on_gpu.device.type == "cuda" and tokens.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), expected)  # IEEE division and subtraction: the same bits


def test_a_training_step_never_synchronises_host_and_device():
    step, _ = _step("bf16")
    assert step.skip_on_device  # fused AdamW on CUDA
    step(_batch(0), 0)  # warm-up: first-use allocations and lazy initialisation
    batches = [_batch(i) for i in range(1, 4)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, batch in enumerate(batches, start=1):
            step(batch, i)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    info = step.read({"corrupt_image": 0})  # the one read
    assert info["nonfinite_total"] == 0 and torch.isfinite(torch.tensor(info["loss"]))


def test_compiled_then_ddp_in_a_one_process_nccl_group_trains_like_eager(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convolutions: comparable
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        eager = towers.create_model("mixer-tiny", text_overrides={"context_length": 16}).to(CUDA)
        torch.manual_seed(0)
        model = towers.create_model("mixer-tiny", text_overrides={"context_length": 16}).to(CUDA)
        compiled = DistributedDataParallel(compile_model(model), device_ids=[0], bucket_cap_mb=1)
        images, tokens = _batch(0)[0]
        reference = ClipLoss()(*eager(images, tokens))
        loss = ClipLoss()(*compiled(images, tokens))
        reference.backward()
        loss.backward()
    finally:
        dist.destroy_process_group()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-4)
    worst = max((a.grad - b.grad).abs().max().item() for a, b in zip(eager.parameters(), model.parameters(),
                                                                      strict=True))
    assert worst < 1e-3


def test_train_py_on_the_gpu_with_compile_logs_and_finishes(tmp_path):
    args = ["--tower", "mixer", "--steps", "6", "--warmup-steps", "1", "--batch-size", "16",
            "--log-every", "3", "--eval-samples", "32", "--workers", "1", "--compile",
            "--runs-dir", str(tmp_path), "--name", "gpu"]
    done = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "gpu" / "config.json").read_text())
    assert config["device"].startswith("cuda")
    steps = [json.loads(line) for line in (tmp_path / "gpu" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in steps if "loss" in line]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)


def test_the_device_decoder_never_writes_into_memory_the_training_stream_still_reads():
    """The race of pytorch/vision#9606 as benchmarks.performance.gpu_smoke stages it: queued reads of
    freed blocks, then a decode. The bare torchvision call may corrupt (GPU-dependent: H100s do, an A100
    may not); `DeviceDecoder`'s must not, ever."""
    from benchmarks.performance.gpu_smoke import decoder_race

    result = decoder_race(CUDA, iterations=30, side=256)
    print(f"corrupted iterations of 30: bare decode {result['corrupted_bare']}, "
          f"DeviceDecoder {result['corrupted_fixed']}")
    assert result["corrupted_fixed"] == 0
