"""The one training loop: any tower pair, the same recipe, from one CPU process to many GPUs.

Accelerate does the distribution (DDP over NCCL on GPUs, gloo on CPU) and mixed precision. The
contrastive loss is open_clip's `ClipLoss`, with features gathered from every process *with
gradient*, so N processes x batch b train exactly like one process with batch N*b. Gradient
accumulation caches features (open_clip's `accum_freq` semantics): every micro-batch's features are
first computed without gradient; then each micro-batch is re-run with gradient and its features
spliced into the cache, so the loss of every backward pass is the loss of the whole accumulated
batch, and `--accum 2 --batch-size 4` equals `--batch-size 8` (weights equal to 1e-5 after 3 steps;
unlike open_clip, the temperature's gradient is taken once per step, not once per micro-batch).

Nothing here looks at which tower is being trained: the model comes from `towers.build_model`, and
weight decay is chosen by parameter shape (>= 2-d weights decay; biases, norm gains, the ViT class
token and `logit_scale` do not).

The step never waits for the device: a non-finite loss or gradient norm is skipped on the device,
through the fused AdamW's `found_inf` (as GradScaler skips a step), and counted in device tensors;
the host reads the loss, grad norm and counters once, in `read()`, at log and checkpoint steps only
(docs/gpu_path.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from open_clip.loss import ClipLoss

import towers
from launch.config import Recipe
from runfolder.vocabulary import MAX_LOGIT_SCALE

MAX_NONFINITE_IN_A_ROW = 10


class NonFiniteLossError(RuntimeError):
    """Too many non-finite steps (loss or gradient norm) in a row: the run stops without a checkpoint."""


def keeps_running_statistics(model_kwargs: dict) -> bool:
    """Whether a training forward changes the buffers of the model `towers.build_model(**model_kwargs)`
    builds (BatchNorm's running mean and variance); decided before the model exists, for DDP's options."""
    with torch.device("meta"):  # the architecture only: no memory, no init cost
        model = towers.build_model(**model_kwargs)
    return any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats
               for module in model.modules())


def ddp_options(sync_buffers: bool = False) -> DistributedDataParallelKwargs:
    """How Accelerate wraps the model in DDP. `gradient_as_bucket_view`: gradients live in DDP's
    all-reduce buckets (no copy in and out; ~600 MB less at B/32 fp32 grads). `broadcast_buffers`: off
    when the towers' buffers are constants (masks, position ids), since DDP would otherwise broadcast them
    before every forward, a collective in the critical path; on (`sync_buffers`, DDP's and open_clip's
    default) for a tower with running statistics, so every process evaluates and checkpoints process 0's.
    (torch 2.14 renamed it `forward_sync_buffers` and warns once; Accelerate's handler, matched by exact
    class, has only the old name.)"""
    return DistributedDataParallelKwargs(gradient_as_bucket_view=True, broadcast_buffers=sync_buffers)


def enable_tf32(device: torch.device) -> None:
    """On CUDA, fp32 matmuls and convolutions in TF32 (open_clip's training does the same): under bf16
    autocast they are what stays fp32, the loss's logits above all."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # one input size for the whole run: tune the convolution once


def device_settings(device: torch.device, model: torch.nn.Module) -> dict:
    """What config.json records of the above: TF32 (None off CUDA, where it means nothing) and the DDP
    wrapper's settings as the wrapper holds them (None in a group of one process: no wrapper)."""
    tf32 = None
    if device.type == "cuda":
        tf32 = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark}
    ddp = None
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        ddp = {"gradient_as_bucket_view": model.gradient_as_bucket_view,
               "broadcast_buffers": model.broadcast_buffers}
    return {"tf32": tf32, "ddp": ddp}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups chosen by shape alone: >= 2-d tensors decay, everything else does not."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel (CUDA; CPU from torch 2.4), the fastest of torch's three
    implementations (docs/design.md)."""
    settings = dict(lr=recipe.lr, betas=tuple(recipe.betas), eps=recipe.eps)
    try:
        return torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), fused=True, **settings)
    except RuntimeError:  # no fused kernel for these parameters' device or dtype
        return torch.optim.AdamW(parameter_groups(model, recipe.weight_decay), **settings)


def learning_rate(step: int, recipe: Recipe) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to 0 at `steps` (open_clip's schedule), or,
    with `lr_schedule: constant`, the constant lr until the last `cooldown_steps`, which decay it
    linearly to 0 at `steps` (the "WSD" schedule of Hägele et al. 2024: until its cooldown starts, a
    run's lr does not depend on its length, so shorter budgets branch from its checkpoints)."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    if recipe.lr_schedule == "constant":
        cooldown_start = recipe.steps - recipe.cooldown_steps
        if step < cooldown_start:
            return recipe.lr
        return recipe.lr * (recipe.steps - step) / (recipe.cooldown_steps + 1)
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * min(1.0, progress)))


class ContrastiveStep:
    """One optimizer step of CLIP training on a list of micro-batches (this process's share).

    `__call__` queues the whole step on the device and returns without reading anything back;
    `read()` is the one host-device synchronisation, for the steps that log or checkpoint.

    `model` is what the forward runs (the DDP-wrapped or compiled model); `autocast` makes the forward's
    precision context, Accelerate's (the run's mixed precision) unless given: a benchmark timing the step
    at its own precision passes its own, and times a compiled model by building a step around it."""

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, optimizer, recipe: Recipe,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None):
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.recipe = recipe
        self.loss = ClipLoss(local_loss=recipe.local_loss, gather_with_grad=True, cache_labels=True,
                             rank=accelerator.process_index, world_size=accelerator.num_processes)
        inner = getattr(optimizer, "optimizer", optimizer)  # under Accelerate's AcceleratedOptimizer
        self._inner_optimizer = inner
        # found_inf is a fused-kernel argument; under fp16 the GradScaler sets it itself, and without
        # a fused kernel the host decides (one read per step).
        self.skip_on_device = (inner is not None and bool(inner.defaults.get("fused"))
                               and getattr(accelerator, "scaler", None) is None)
        self.nonfinite_in_a_row = torch.zeros((), device=accelerator.device)
        self.nonfinite_total = torch.zeros((), device=accelerator.device)
        self.last_loss: torch.Tensor | None = None
        self.last_grad_norm: torch.Tensor | None = None
        self._autocast = autocast or accelerator.autocast

    def _forward(self, images: torch.Tensor, tokens: torch.Tensor):
        with self._autocast(), towers.attention_kernels(self.accelerator.device):
            image_features, text_features, scale = self.model(images, tokens)[:3]
        # The loss is taken in at least fp32 under every precision: bf16 logits carry 3 significant
        # digits, too few for a softmax over the global batch (a float64 model stays float64).
        dtype = torch.promote_types(image_features.dtype, torch.float32)
        return image_features.to(dtype), text_features.to(dtype), scale

    def _backward(self, loss: torch.Tensor) -> None:
        # Under the forward's attention kernels: gradient checkpointing re-runs the forward of each
        # block here, and a recompute through another kernel saves other tensors (CheckpointError).
        with towers.attention_kernels(self.accelerator.device):
            self.accelerator.backward(loss)

    def __call__(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], step: int) -> dict:
        """Run one step; returns {"loss": global-batch loss} as a device tensor (no host read)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.recipe)
        self.optimizer.zero_grad(set_to_none=True)
        if len(micro_batches) == 1:
            images, tokens = micro_batches[0]
            image_features, text_features, scale = self._forward(images, tokens)
            loss = self.loss(image_features, text_features, scale)
            self._backward(loss)
        else:
            loss = self._accumulated_backward(micro_batches)
        return self._finish(loss.detach())

    def _accumulated_backward(self, micro_batches) -> torch.Tensor:
        with torch.no_grad():
            cached = [self._forward(images, tokens)[:2] for images, tokens in micro_batches]
        cached_images = [features for features, _ in cached]
        cached_texts = [features for _, features in cached]
        # Gradients are synchronised across processes once, on the last micro-batch. DDP's own
        # no_sync: Accelerate's is a no-op in a group of one process, whose DDP would then reduce
        # after the first micro-batch, where the temperature took no gradient, and fail.
        no_sync = getattr(self.model, "no_sync", contextlib.nullcontext)
        for j, (images, tokens) in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last else no_sync()
            with sync:
                image_j, text_j, scale = self._forward(images, tokens)
                all_images = torch.cat(cached_images[:j] + [image_j] + cached_images[j + 1:])
                all_texts = torch.cat(cached_texts[:j] + [text_j] + cached_texts[j + 1:])
                # The temperature enters every micro-batch's loss; letting it take gradient in each would
                # count its gradient `accum` times (open_clip's accum_freq does). It takes it once, on the
                # last micro-batch (the synchronised one), so accumulation equals the whole batch exactly.
                loss = self.loss(all_images, all_texts, scale if last else scale.detach())
                self._backward(loss)
        return loss

    def _finish(self, loss: torch.Tensor) -> dict:
        # The loss of the global batch: with --local-loss each process holds the loss of its own rows
        # only, and their mean is the global one (without it every process already holds the global
        # loss). The mean is also the one decision every process must share, or their weights would
        # part: it is non-finite as soon as one process's loss is.
        loss = self.accelerator.reduce(loss.reshape(1), reduction="mean")[0]
        grad_norm = self._grad_norm()
        bad = ~torch.isfinite(loss)
        if grad_norm is not None and getattr(self.accelerator, "scaler", None) is None:
            # A finite loss can still back-propagate inf/NaN (an overflow in a backward kernel). The norm
            # is of the all-reduced gradients, so every process takes the same decision. Under fp16 the
            # GradScaler skips such steps itself (and expects to, while it calibrates its scale).
            bad = bad | ~torch.isfinite(grad_norm)
        nonfinite = bad.to(self.nonfinite_total.dtype)
        self.nonfinite_total += nonfinite
        self.nonfinite_in_a_row = (self.nonfinite_in_a_row + 1) * nonfinite
        if self.skip_on_device:
            self._inner_optimizer.found_inf = nonfinite.float()  # 1: the kernel leaves weights and state
            try:
                self.optimizer.step()
            finally:
                del self._inner_optimizer.found_inf
        elif nonfinite.item():
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        with torch.no_grad():  # CLIP's clamp: the temperature never exceeds 100
            self.accelerator.unwrap_model(self.model).logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
        self.last_loss, self.last_grad_norm = loss, grad_norm
        return {"loss": loss}

    def _grad_norm(self) -> torch.Tensor | None:
        """The total gradient norm, a device tensor (no host read): clipping's own (`grad_clip` > 0), else
        computed for the non-finite check alone (one fused pass over the gradients)."""
        if self.recipe.grad_clip > 0:
            return self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else None

    def read(self, counts: dict[str, int] | None = None) -> dict:
        """The last step's loss, grad norm, temperature and non-finite counters, and `counts` (e.g.
        skipped samples by kind) summed over the processes, in one gather and one host read; every
        process must call it at the same steps. Raises NonFiniteLossError after
        MAX_NONFINITE_IN_A_ROW non-finite steps in a row."""
        names = sorted(counts or {})
        nan = torch.full((), math.nan, device=self.nonfinite_total.device)
        temperature = self.accelerator.unwrap_model(self.model).temperature().detach()
        stats = [self.last_loss, nan if self.last_grad_norm is None else self.last_grad_norm,
                 self.nonfinite_in_a_row, self.nonfinite_total, temperature]
        row = torch.stack([value.to(stats[2].device, torch.float64) for value in stats])
        if counts is not None:
            mine = torch.tensor([counts[name] for name in names], dtype=torch.float64)
            if row.device.type == "cuda":  # a pageable copy would wait for the device's whole queue
                mine = mine.pin_memory()
            mine = mine.to(row.device, non_blocking=True)
            row = self.accelerator.gather(torch.cat([row, mine])[None])
        values = row.reshape(-1, len(stats) + len(names)).tolist()
        loss, grad_norm, in_a_row, total, temperature = values[0][:len(stats)]
        if in_a_row >= MAX_NONFINITE_IN_A_ROW:
            raise NonFiniteLossError(f"loss or gradient norm was not finite for {int(in_a_row)} steps in a "
                                     f"row (last loss {loss}, gradient norm {grad_norm}); stopping without "
                                     "writing a checkpoint")
        return {"loss": loss, "grad_norm": None if self.last_grad_norm is None else grad_norm,
                "logit_scale": temperature, "nonfinite_in_a_row": int(in_a_row),
                "nonfinite_total": int(total),
                "counts": {name: int(sum(v[len(stats) + i] for v in values)) for i, name in enumerate(names)}}


def micro_batch_stream(loader: Iterable, accum: int, device: torch.device, timer: dict,
                       finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       ) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Group the loader's batches into steps of `accum` micro-batches, timing the waits. Batches are
    copied without blocking (asynchronous when the loader pins them) and, with `finish` (the loader's
    uint8 finisher on `device`), turned into float images there: a quarter of the bytes cross PCIe."""
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        step = []
        for _ in range(accum):
            images, tokens = next(iterator)
            images = images.to(device, non_blocking=True)
            step.append((finish(images) if finish else images, tokens.to(device, non_blocking=True)))
        timer["data_wait"] += time.perf_counter() - started
        yield step


def compile_model(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """torch.compile the bare model, before `accelerator.prepare` wraps it in DDP: PyTorch's advice
    (dynamo handles DDP's wrapper poorly). Dynamo's DDPOptimizer still cuts the compiled graph at
    DDP's gradient buckets, as DDP marks itself active around the forward, so each bucket's
    all-reduce overlaps the rest of the backward (tests/test_compile_checkpointing.py)."""
    return torch.compile(model, backend=backend)
