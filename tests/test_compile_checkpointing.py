"""--grad-checkpointing and --compile train the same model: the same loss to 1e-5 in fp32 (tiny
towers), checkpointing really recomputes (fewer saved activations) for every tower pair, and the
model is compiled before DDP wraps it, and dynamo still splits its graph at DDP's gradient buckets."""

from __future__ import annotations

import functools
import os
import shutil

import pytest
import torch
import torch.distributed as dist
from accelerate import Accelerator
from open_clip.loss import ClipLoss
from torch.nn.parallel import DistributedDataParallel

import towers
from launch import train, trainer
from launch.config import Recipe, parse_experiment

PAIRS = ("mixer", "transformer", "transformer+mixer", "mixer+transformer")
SMALL = {"image_overrides": {"layers": 1, "width": 32, "image_size": 32},
         "text_overrides": {"layers": 1, "width": 32, "context_length": 16}}


def _batch(size: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return images, towers.tokenize([f"a blue shape number {i}" for i in range(8)], 16)


def _losses(name: str, steps: int, prepare=None, **overrides) -> list[float]:
    """fp32 losses of `steps` trainer steps on fixed batches (the model seeded identically)."""
    torch.manual_seed(0)
    model = towers.create_model(name, **overrides)
    recipe = Recipe(batch_size=8, warmup_steps=1, precision="fp32")
    accelerator = Accelerator(cpu=True)
    ddp_model, optimizer = accelerator.prepare(model, trainer.build_optimizer(model, recipe))
    step = trainer.ContrastiveStep(accelerator, prepare(ddp_model) if prepare else ddp_model, optimizer,
                                   recipe)
    size = model.image_size
    return [step([_batch(size, i)], i)["loss"].item() for i in range(steps)]


def _saved_bytes(model: torch.nn.Module, images, tokens) -> int:
    """Bytes autograd keeps for the backward pass of one forward (checkpointed segments keep only
    their inputs)."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = ClipLoss()(*model(images, tokens))
    loss.backward()
    return total[0]


@pytest.mark.parametrize("pair", PAIRS)
def test_grad_checkpointing_recomputes_and_trains_the_same(pair):
    name = f"{pair}-tiny"
    torch.manual_seed(0)
    model = towers.create_model(name, text_overrides={"context_length": 16}).train()
    images, tokens = _batch(64)
    plain = _saved_bytes(model, images, tokens)
    model.set_grad_checkpointing(True)
    checkpointed = _saved_bytes(model, images, tokens)
    print(f"{name}: saved for backward {plain / 2**20:.1f} -> {checkpointed / 2**20:.1f} MiB")
    assert checkpointed < 0.5 * plain  # both towers' blocks are checkpointed, not just one

    def checkpointing(ddp_model):
        ddp_model.set_grad_checkpointing(True)
        return ddp_model

    eager = _losses(name, 2, **SMALL)  # through the trainer's step, smaller still (time)
    with_checkpoints = _losses(name, 2, checkpointing, **SMALL)
    assert eager[0] != eager[1]  # the second loss is after an optimizer step
    assert with_checkpoints == pytest.approx(eager, abs=1e-5)


def test_train_py_compiles_the_bare_model_once(monkeypatch):
    compiled_what = []

    def compile_model(model):
        compiled_what.append(model)
        return trainer.compile_model(model, backend="eager")

    monkeypatch.setattr(train, "compile_model", compile_model)
    experiment, options = parse_experiment(["--tower", "mixer", "--compile", "--workers", "0",
                                            "--batch-size", "8", "--precision", "fp32"])
    run = train.TrainingRun(experiment, options, Accelerator(cpu=True))
    assert compiled_what == [run.model]  # the bare CLIP, before accelerator.prepare wraps it
    assert isinstance(run.ddp_model, torch._dynamo.eval_frame.OptimizedModule)


def test_compiled_step_trains_the_same():
    # dynamo capture plus AOT autograd's forward and backward graphs (backend aot_eager: no C++
    # compiler needed); inductor's code generation is the slow test below.
    eager = _losses("mixer+transformer-tiny", 2, **SMALL)
    compiled = _losses("mixer+transformer-tiny", 2,
                       functools.partial(trainer.compile_model, backend="aot_eager"), **SMALL)
    assert eager[0] != eager[1]
    assert compiled == pytest.approx(eager, abs=1e-5)


def test_compiled_inside_ddp_the_graph_splits_at_gradient_buckets(tmp_path):
    # dynamo's DDPOptimizer cuts the graph where DDP's buckets end, so each bucket's all-reduce can
    # start while the rest of the backward runs; without it (optimize_ddp off) it is one graph.
    graphs: list[int] = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(len(graph_module.graph.nodes))
        return graph_module.forward

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        counts = {}
        for optimize_ddp in (True, False):
            torch._dynamo.reset()
            graphs.clear()
            torch.manual_seed(0)
            model = towers.create_model("mixer-tiny", text_overrides={"context_length": 16})
            ddp = DistributedDataParallel(trainer.compile_model(model, backend=counting_backend),
                                          bucket_cap_mb=1)
            with torch._dynamo.config.patch(optimize_ddp=optimize_ddp):
                ClipLoss()(*ddp(*_batch(64))).backward()
            counts[optimize_ddp] = list(graphs)
    finally:
        dist.destroy_process_group()
        torch._dynamo.reset()
    print(f"graph sizes (nodes): split at buckets {counts[True]}, whole {counts[False]}")
    assert len(counts[False]) == 1 and len(counts[True]) >= 4  # the model spans >= 4 buckets of 1 MB
    assert sum(counts[True]) > counts[False][0]  # every node is in some piece (plus the cut points)


def _cxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


@pytest.mark.slow
@pytest.mark.skipif(_cxx() is None, reason="torch.compile's inductor needs a C++ compiler on CPU "
                    "(g++, or $CXX); none found")
def test_inductor_compiled_step_trains_the_same(tmp_path, monkeypatch):
    # A cache of its own: inductor's key misses ATEN_CPU_CAPABILITY, so kernels cached by a run at
    # another capability were reused and gave NaN (the suite under ATEN_CPU_CAPABILITY=avx2).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    # the same kernels compiled in this process: a pool of compile workers would first import torch each
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)
    eager = _losses("mixer-tiny", 2, **SMALL)
    compiled = _losses("mixer-tiny", 2, functools.partial(trainer.compile_model, backend="inductor"),
                       **SMALL)
    assert eager[0] != eager[1]
    assert compiled == pytest.approx(eager, abs=1e-5)
