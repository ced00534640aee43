"""Which scaled-dot-product-attention kernels a Transformer tower may use on a device.

On GPUs torch picks flash / memory-efficient attention itself, and that stays. On CPUs its
flash-attention kernel is slower than plain matmuls at CLIP's short sequences, and badly so in bf16,
whose backward it runs far below the matmuls' rate: one training step of the tiny Transformer CLIP
(65 image tokens, 32 text tokens, head width 32; batch 128, 2 cores) takes 590 ms with it and 446 ms
with the math path in bf16 (fp32: 747 / 716 ms). Larger CPU variants were not timed. The trainer
and the throughput benchmark both run under this, so the benchmark times the step training runs.

    with towers.attention_kernels(device):
        loss = clip_loss(*model(images, tokens))
    loss.backward()          # the backward follows the kernels chosen in the forward

Mixer towers have no attention; the context changes nothing for them.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def attention_kernels(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context restricting attention to the math path on CPU; a no-op elsewhere."""
    if torch.device(device).type == "cpu":
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()
