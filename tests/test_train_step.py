"""The training step never reads the device back: no host read outside `read()`, a non-finite loss or
gradient norm is skipped on the device (weights and AdamW state untouched) and counted, uint8 batches
are finished after the copy with the same bits as in the loader; train.py's DDP options and TF32."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from accelerate import Accelerator

import towers
from launch import data as launch_data
from launch.config import Recipe
from launch.trainer import (
    MAX_NONFINITE_IN_A_ROW,
    ContrastiveStep,
    NonFiniteLossError,
    build_optimizer,
    ddp_options,
    device_settings,
    enable_tf32,
)
from launch.trainer import micro_batch_stream as stream_of

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def _tiny_step(seed: int = 0, grad_clip: float = 1.0) -> tuple[ContrastiveStep, torch.nn.Module]:
    torch.manual_seed(seed)
    model = towers.create_model("mixer-tiny", text_overrides={"context_length": 16})
    accelerator = Accelerator(cpu=True)
    recipe = Recipe(batch_size=8, warmup_steps=1, precision="fp32", grad_clip=grad_clip)
    ddp_model, optimizer = accelerator.prepare(model, build_optimizer(model, recipe))
    return ContrastiveStep(accelerator, ddp_model, optimizer, recipe), model


def _batch(seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 64, 64, generator=generator)
    return [(images, towers.tokenize([f"a red shape number {i}" for i in range(8)], 16))]


@contextlib.contextmanager
def counting_host_reads():
    counts = dict.fromkeys(HOST_READS, 0)
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name):
        def method(self, *args, **kwargs):
            counts[name] += 1
            return originals[name](self, *args, **kwargs)
        return method

    for name in HOST_READS:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_a_step_reads_nothing_back_and_read_is_one_host_read():
    step, _ = _tiny_step()
    assert step.skip_on_device  # fused AdamW on this torch: the skip is the kernel's found_inf
    with counting_host_reads() as counts:
        for i in range(2):
            step(_batch(i), i)
    assert sum(counts.values()) == 0, counts
    with counting_host_reads() as counts:
        info = step.read({"corrupt_image": 3, "missing_caption": 0})
    assert counts["tolist"] == 1 and sum(counts.values()) == 1, counts
    # the numbers read back are the step's: loss of the last batch, recomputed independently
    assert info["counts"] == {"corrupt_image": 3, "missing_caption": 0}
    assert info["nonfinite_total"] == info["nonfinite_in_a_row"] == 0
    assert info["loss"] == pytest.approx(step.last_loss.item(), rel=1e-12)
    assert 0 < info["grad_norm"] and info["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-2)


def test_a_nonfinite_loss_is_skipped_on_the_device_and_counted():
    step, model = _tiny_step()
    step(_batch(0), 0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = step._inner_optimizer
    moments = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    original = step.loss.forward
    step.loss.forward = lambda *args, **kwargs: original(*args, **kwargs) * float("nan")
    step(_batch(1), 1)
    step(_batch(2), 2)
    info = step.read()
    assert info["nonfinite_in_a_row"] == info["nonfinite_total"] == 2
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # no step was taken
    for parameter, before in zip(model.parameters(), moments, strict=True):
        assert all(torch.equal(before[k], v) for k, v in optimizer.state[parameter].items())  # nor counted
    step.loss.forward = original
    step(_batch(3), 3)
    info = step.read()
    assert info["nonfinite_in_a_row"] == 0 and info["nonfinite_total"] == 2
    assert not torch.equal(weights["logit_scale"], model.state_dict()["logit_scale"])  # it trained again
    step.loss.forward = lambda *args, **kwargs: original(*args, **kwargs) * float("inf")
    for i in range(MAX_NONFINITE_IN_A_ROW):
        step(_batch(4 + i), 4 + i)
    with pytest.raises(NonFiniteLossError, match=f"{MAX_NONFINITE_IN_A_ROW} steps in a row"):
        step.read()


def test_uint8_batches_are_finished_after_the_copy_with_the_loaders_bits(tmp_path):
    from test_train_loader import write_dataset

    spec, _ = write_dataset(tmp_path / "shards")
    common = dict(image_size=16, batch_size=8, workers=0, seed=0)
    finished = launch_data.get_train_loader(spec, **common)
    raw = launch_data.get_train_loader(spec, **common, finish_images=False)
    timer = {"data_wait": 0.0}
    steps = stream_of(raw, 1, torch.device("cpu"), timer, raw.finish.to("cpu"))
    expected_batches = iter(finished)
    for _ in range(3):
        expected, expected_tokens = next(expected_batches)
        [(images, tokens)] = next(steps)
        assert images.dtype == torch.float32 and torch.equal(images, expected)
        assert torch.equal(tokens, expected_tokens)
    assert expected.min() < -1 and timer["data_wait"] > 0  # normalised, and the wait was timed
    assert next(iter(raw))[0].dtype == torch.uint8  # the loader itself sends uint8


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_nonfinite_gradients_under_a_finite_loss_are_skipped_and_counted(grad_clip):
    # an overflow inside a backward kernel: the loss is finite, one weight's gradient is inf
    step, model = _tiny_step(grad_clip=grad_clip)
    step(_batch(0), 0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = step._inner_optimizer
    moments = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    poisoned = next(p for p in model.parameters() if p.ndim >= 2)
    hook = poisoned.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    with counting_host_reads() as counts:
        step(_batch(1), 1)
    assert sum(counts.values()) == 0, counts  # the check is a device op, still no host read in a step
    info = step.read()
    assert math.isfinite(info["loss"]) and not math.isfinite(info["grad_norm"])
    assert info["nonfinite_in_a_row"] == info["nonfinite_total"] == 1
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # no step was taken
    for parameter, before in zip(model.parameters(), moments, strict=True):
        assert all(torch.equal(before[k], v) for k, v in optimizer.state[parameter].items())
    hook.remove()
    step(_batch(2), 2)
    info = step.read()
    assert info["nonfinite_in_a_row"] == 0 and info["nonfinite_total"] == 1
    assert math.isfinite(info["grad_norm"])
    assert not torch.equal(weights["logit_scale"], model.state_dict()["logit_scale"])  # it trained again


def test_the_ddp_options_are_accepted_by_accelerate_and_reach_its_ddp_kwargs():
    # what train.py hands Accelerate; the wrapper's own attributes are checked in 2 gloo processes
    # (tests/test_trainer_equivalence.py, tests/test_multinode.py)
    accelerator = Accelerator(cpu=True, kwargs_handlers=[ddp_options()])
    expected = {"gradient_as_bucket_view": True, "broadcast_buffers": False}
    assert accelerator.ddp_handler.to_kwargs() == expected


def test_tf32_is_turned_on_for_cuda_only_and_recorded():
    # process-wide flags (settable without a GPU), restored by hand: monkeypatch cannot undo them
    flags = ((torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cudnn, "benchmark"))
    before = [getattr(module, name) for module, name in flags]
    try:
        for module, name in flags:
            setattr(module, name, False)
        model = torch.nn.Linear(2, 2)
        enable_tf32(torch.device("cpu"))
        assert not any(getattr(module, name) for module, name in flags)
        assert device_settings(torch.device("cpu"), model) == {"tf32": None, "ddp": None}
        enable_tf32(torch.device("cuda", 0))
        assert device_settings(torch.device("cuda", 0), model)["tf32"] == {
            "matmul": True, "cudnn": True, "cudnn_benchmark": True}
    finally:
        for (module, name), value in zip(flags, before, strict=True):
            setattr(module, name, value)
