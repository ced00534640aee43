"""open_clip's entry points for towers models: `create_model_and_transforms` and `get_tokenizer`.

    import towers
    model, preprocess_train, preprocess_val = towers.create_model_and_transforms("runs/mixer-seed0")
    tokenizer = towers.get_tokenizer(model)           # or a model name: towers.get_tokenizer("mixer-B-32")
    features = model.encode_text(tokenizer(["a red circle"]), normalize=True)

The model argument is anything `towers.load` takes (run folder, checkpoint, exported folder, towers
model name, open_clip name with `pretrained=`). The tokenizer gives the model's own context length:
`towers.tokenize` alone gives 77 positions, which a text tower built for 32 refuses in train mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from towers.clip import CLIP, parse_model_name
from towers.loading import load
from towers.preprocess import CONTEXT_LENGTH, image_transform, tokenize
from towers.registry import tower_config


class Tokenizer:
    """open_clip's tokenizer at one context length: `tokenizer(texts)` -> LongTensor (B, context_length)."""

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        self.context_length = int(context_length)

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.LongTensor:
        return tokenize(texts, context_length=context_length or self.context_length)

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length})"


def context_length_of(model: CLIP | torch.nn.Module | str) -> int:
    """The text context a model (or a towers model name) was built with."""
    if isinstance(model, str):
        _, text_family, variant = parse_model_name(model)
        return int(tower_config(text_family, "text", variant).get("context_length", CONTEXT_LENGTH))
    return int(getattr(model, "context_length", CONTEXT_LENGTH))


def get_tokenizer(model: CLIP | torch.nn.Module | str) -> Tokenizer:
    """The tokenizer for `model` (a built model or a towers model name), at its context length."""
    return Tokenizer(context_length_of(model))


def create_model_and_transforms(name: str | os.PathLike, device: str | torch.device = "cpu",
                                pretrained: str | None = None
                                ) -> tuple[CLIP, Callable, Callable]:
    """(model, train preprocess, eval preprocess), as open_clip's function of that name returns them;
    `name` is anything `towers.load` takes. The model comes in eval mode, as `towers.load` gives it."""
    model, preprocess_val = load(name, device=device, pretrained=pretrained)
    return model, image_transform(model.image_size, train=True), preprocess_val
