"""Parameter and FLOP counts per tower, on the `meta` device so even B/16 takes a second.

FLOPs come from torch's own FLOP counter (`torch.utils.flop_counter`, one multiply-add = 2 FLOPs) for
one sample (a 77-token text; an image at the model's size). The model is counted in train mode:
nn.MultiheadAttention's eval fast path runs a fused kernel the counter does not see, which hides
most attention FLOPs (measured: ViT-B/32 image 5.89 GFLOPs in eval mode, 8.73 in train mode).

    python -m towers          # table of every registered model
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from towers.clip import CLIP, create_model


def _count_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def profile(model: str | CLIP) -> dict:
    """{image,text,total}_params and {image,text}_gflops per sample for a model or model name."""
    if isinstance(model, str):
        with torch.device("meta"):
            model = create_model(model)
    image_params = sum(p.numel() for p in model.visual.parameters()) + model.image_projection.numel()
    text_params = sum(p.numel() for p in model.text.parameters()) + model.text_projection.numel()
    total_params = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    images = torch.zeros(1, 3, model.image_size, model.image_size, device=device)
    tokens = torch.zeros(1, model.context_length, dtype=torch.long, device=device)
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            image_flops = _count_flops(lambda: model.encode_image(images))
            text_flops = _count_flops(lambda: model.encode_text(tokens))
    finally:
        model.train(was_training)
    return dict(model=model.model_name, image_params=image_params, text_params=text_params,
                total_params=total_params, image_gflops=image_flops / 1e9, text_gflops=text_flops / 1e9)
