"""Parameter and FLOP counts per tower, on the `meta` device so even B/16 takes a second.

FLOPs come from torch's own FLOP counter (`torch.utils.flop_counter`, one multiply-add = 2 FLOPs) for
one sample (a 77-token text; an image at the model's size). The model is counted in train mode:
nn.MultiheadAttention's eval fast path runs a fused kernel the counter does not see, which would hide
most attention FLOPs.

    python -m towers          # table of every registered model
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from towers.clip import CLIP, create_model


def count_flops(fn) -> int:
    """FLOPs of calling `fn()`, by torch's FLOP counter (one multiply-add = 2)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def embedding_params(model: torch.nn.Module) -> int:
    """Token and position embeddings (Kaplan et al.'s "embedding" parameters, left out of the
    non-embedding count that scaling laws use); patch embeddings map the input and stay counted."""
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    positions = sum(p.numel() for name, p in model.named_parameters()
                    if name.endswith(("positional_embedding", "pos_embed")))
    return tables + positions


def image_size_of(model: torch.nn.Module) -> int:
    size = getattr(model, "image_size", None) or model.visual.image_size  # open_clip keeps it on .visual
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def profile(model: str | CLIP | torch.nn.Module) -> dict:
    """{image,text,total,non_embedding}_params and {image,text}_gflops per sample for a model name, our
    CLIP, or any CLIP-style model with `.visual`, `encode_image`, `encode_text` and `context_length`
    (open_clip's): image params = the image tower with its projection, text params = everything else."""
    if isinstance(model, str):
        with torch.device("meta"):
            model = create_model(model)
    total_params = sum(p.numel() for p in model.parameters())
    image_params = sum(p.numel() for p in model.visual.parameters())
    if isinstance(model, CLIP):  # our CLIP holds the image projection beside the tower, open_clip inside
        image_params += model.image_projection.numel()
    text_params = total_params - image_params
    device = next(model.parameters()).device
    size = image_size_of(model)
    images = torch.zeros(1, 3, size, size, device=device)
    tokens = torch.zeros(1, model.context_length, dtype=torch.long, device=device)
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            image_flops = count_flops(lambda: model.encode_image(images))
            text_flops = count_flops(lambda: model.encode_text(tokens))
    finally:
        model.train(was_training)
    return dict(model=getattr(model, "model_name", type(model).__name__), image_params=image_params,
                text_params=text_params, total_params=total_params,
                non_embedding_params=total_params - embedding_params(model), image_gflops=image_flops / 1e9,
                text_gflops=text_flops / 1e9)
