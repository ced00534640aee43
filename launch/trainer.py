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
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator

import torch
from accelerate import Accelerator
from open_clip.loss import ClipLoss

import towers
from launch.config import Recipe

MAX_NONFINITE_IN_A_ROW = 10


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row: the run stops without writing a checkpoint."""


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
    """Linear warmup over `warmup_steps`, then cosine decay to 0 at `steps` (open_clip's schedule)."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * min(1.0, progress)))


class ContrastiveStep:
    """One optimizer step of CLIP training on a list of micro-batches (this process's share)."""

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, optimizer, recipe: Recipe):
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.recipe = recipe
        self.loss = ClipLoss(local_loss=recipe.local_loss, gather_with_grad=True, cache_labels=True,
                             rank=accelerator.process_index, world_size=accelerator.num_processes)
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0

    def _forward(self, images: torch.Tensor, tokens: torch.Tensor):
        with self.accelerator.autocast(), towers.attention_kernels(self.accelerator.device):
            image_features, text_features, scale = self.model(images, tokens)
        # The loss is taken in at least fp32 under every precision: bf16 logits carry 3 significant
        # digits, too few for a softmax over the global batch (a float64 model stays float64).
        dtype = torch.promote_types(image_features.dtype, torch.float32)
        return image_features.to(dtype), text_features.to(dtype), scale

    def __call__(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], step: int) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.recipe)
        self.optimizer.zero_grad(set_to_none=True)
        if len(micro_batches) == 1:
            images, tokens = micro_batches[0]
            image_features, text_features, scale = self._forward(images, tokens)
            loss = self.loss(image_features, text_features, scale)
            self.accelerator.backward(loss)
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
                self.accelerator.backward(loss)
        return loss

    def _finish(self, loss: torch.Tensor) -> dict:
        # The loss of the global batch: with --local-loss each process holds the loss of its own rows
        # only, and their mean is the global one (without it every process already holds the global
        # loss). The mean is also the one decision every process must share, or DDP would deadlock
        # on the next step: it is non-finite as soon as one process's loss is.
        loss = self.accelerator.reduce(loss.reshape(1), reduction="mean")[0]
        all_finite = bool(torch.isfinite(loss).item())
        if not all_finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            if self.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise NonFiniteLossError(f"loss was not finite for {self.nonfinite_in_a_row} steps in a row "
                                         f"(last: {loss.item()}); stopping without writing a checkpoint")
            return {"loss": loss.item(), "skipped_step": True}
        self.nonfinite_in_a_row = 0
        grad_norm = None
        if self.recipe.grad_clip > 0:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        with torch.no_grad():  # CLIP's clamp: the temperature never exceeds 100
            self.accelerator.unwrap_model(self.model).logit_scale.clamp_(0, math.log(100))
        return {"loss": loss.item(), "skipped_step": False,
                "grad_norm": None if grad_norm is None else float(grad_norm)}


def micro_batch_stream(loader: Iterable, accum: int, device: torch.device,
                       timer: dict) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Group the loader's batches into steps of `accum` micro-batches, timing the waits."""
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        step = []
        for _ in range(accum):
            images, tokens = next(iterator)
            step.append((images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)))
        timer["data_wait"] += time.perf_counter() - started
        yield step
