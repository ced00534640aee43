"""Which scaled-dot-product-attention kernels a Transformer tower may use on a device.

On GPUs torch picks flash / memory-efficient attention itself, and that stays. On CPUs its
flash-attention kernel is slower than plain matmuls at CLIP's short sequences, in bf16 most of all
(docs/design.md), so the math kernel is used there. The trainer and the throughput benchmark both run
under this, so the benchmark times the step training runs.

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
