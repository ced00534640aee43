"""The two-tower CLIP model, and the openai/CLIP-style module API that names and builds it.

`CLIP(image_tower, text_tower, embed_dim)` takes any image tower and any text tower (each mapping its
input to pooled features of its own `.width`) and owns everything else, identically for every family:
the two linear projections to `embed_dim`, L2 normalisation, and the learned temperature
(`logit_scale`, init log(1/0.07); the trainer keeps its exp <= 100). `forward` returns what open_clip's CLIP
returns, `logits` what openai/CLIP's returns.

Model names: `"{family}-{variant}"` (both towers of one family, e.g. `mixer-B-32`) or
`"{image_family}+{text_family}-{variant}"` (e.g. `transformer+mixer-tiny`).

    import towers
    model = towers.create_model("mixer-B-32")
    image_features = model.encode_image(images, normalize=True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from towers.registry import (
    FAMILIES,
    all_variants,
    build_tower,
    canonical_variant,
    pair_variants,
    variant_table,
)

INIT_LOGIT_SCALE = math.log(1 / 0.07)


def longest_eot(tokens: torch.Tensor) -> int:
    """Length of the batch up to and including its last EOT (the largest id of each row, as CLIP pools)."""
    return int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else tokens.shape[-1]


class CLIP(nn.Module):
    """Two towers, two projections, one temperature."""

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, embed_dim: int,
                 init_logit_scale: float = INIT_LOGIT_SCALE):
        super().__init__()
        self.visual = image_tower
        self.text = text_tower
        self.embed_dim = embed_dim
        # x @ projection, as open_clip stores `visual.proj` and `text_projection` (width, embed_dim).
        self.image_projection = nn.Parameter(torch.empty(image_tower.width, embed_dim))
        self.text_projection = nn.Parameter(torch.empty(text_tower.width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        nn.init.normal_(self.image_projection, std=image_tower.width ** -0.5)
        nn.init.normal_(self.text_projection, std=text_tower.width ** -0.5)
        self.model_name = "custom"
        self.model_config: dict = {}

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size[0] if isinstance(size, tuple) else int(size)

    @property
    def context_length(self) -> int:
        return self.text.context_length

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(images) @ self.image_projection
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False,
                    stop_at_eot: bool | None = None) -> torch.Tensor:
        """(B, context_length) token ids -> (B, embed_dim). ``stop_at_eot`` (default: in eval mode) runs
        a pad-inert text tower only up to the batch's longest EOT, which gives the same features (no
        position after EOT reaches the EOT feature) at the cost of the tokens; training keeps the fixed
        length, so a step's shapes, and a GPU step's host syncs, do not depend on the batch."""
        if stop_at_eot is None:
            stop_at_eot = not self.training
        if stop_at_eot and getattr(self.text, "stops_at_eot", False):
            tokens = tokens[:, :longest_eot(tokens)]
        features = self.text(tokens) @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features

    def temperature(self) -> torch.Tensor:
        """exp(logit_scale). Not clamped here: the trainer clamps `logit_scale` in place after each
        optimizer step (as open_clip does), so the gradient can still lower a temperature at the cap."""
        return self.logit_scale.exp()

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None):
        """(image_features, text_features, logit_scale): normalised features, exp'd scale."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        return image_features, text_features, self.temperature()

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text) as openai/CLIP's forward."""
        image_features, text_features, scale = self(image, text)
        logits_per_image = scale * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def model_name(image_family: str, text_family: str, variant: str) -> str:
    variant = canonical_variant(variant).replace("/", "-")
    families = image_family if image_family == text_family else f"{image_family}+{text_family}"
    return f"{families}-{variant}"


def parse_model_name(name: str) -> tuple[str, str, str]:
    """`mixer-B-32` -> ("mixer", "mixer", "B/32"); `transformer+mixer-tiny` -> (..., "tiny")."""
    families, _, variant = name.partition("-")
    image_family, _, text_family = families.partition("+")
    text_family = text_family or image_family
    valid = available_models()
    if not variant or image_family not in FAMILIES or text_family not in FAMILIES:
        raise ValueError(f"unknown model {name!r}: expected one of {valid}")
    if canonical_variant(variant) not in pair_variants(image_family, text_family):
        raise ValueError(f"unknown model {name!r}: expected one of {valid}")
    return image_family, text_family, canonical_variant(variant)


def available_models() -> list[str]:
    """Every image family x text family x variant the two share (one family's table never hides
    another pair's variant)."""
    return [model_name(i, t, v) for v in all_variants() for i in FAMILIES for t in FAMILIES
            if v in pair_variants(i, t)]


def build_model(image_family: str, text_family: str, variant: str, embed_dim: int | None = None,
                image_overrides: dict | None = None, text_overrides: dict | None = None) -> CLIP:
    """Build a CLIP from its parts; `embed_dim` defaults to the image family's variant table."""
    image_overrides, text_overrides = dict(image_overrides or {}), dict(text_overrides or {})
    embed_dim = embed_dim or variant_table(image_family, variant)["embed_dim"]
    model = CLIP(build_tower(image_family, "image", variant, **image_overrides),
                 build_tower(text_family, "text", variant, **text_overrides), embed_dim)
    model.model_name = model_name(image_family, text_family, variant)
    model.model_config = dict(image_family=image_family, text_family=text_family,
                              variant=canonical_variant(variant), embed_dim=embed_dim,
                              image_overrides=image_overrides, text_overrides=text_overrides)
    return model


def create_model(name: str, embed_dim: int | None = None, image_overrides: dict | None = None,
                 text_overrides: dict | None = None, quick_gelu: bool = False) -> CLIP:
    """Build a randomly initialised model by name (see `available_models()`).

    `quick_gelu=True` switches Transformer towers to QuickGELU, as OpenAI's released weights need.
    """
    image_family, text_family, variant = parse_model_name(name)
    image_overrides, text_overrides = dict(image_overrides or {}), dict(text_overrides or {})
    if quick_gelu:
        for family, overrides in ((image_family, image_overrides), (text_family, text_overrides)):
            if family == "transformer":
                overrides["quick_gelu"] = True
    return build_model(image_family, text_family, variant, embed_dim, image_overrides, text_overrides)


def build_from_config(config: dict) -> CLIP:
    """Rebuild a model from its `model_config` (as saved in our checkpoints)."""
    try:
        return build_model(config["image_family"], config["text_family"], config["variant"],
                           config.get("embed_dim"), config.get("image_overrides"),
                           config.get("text_overrides"))
    except KeyError as missing:
        raise ValueError(f"model_config lacks {missing}: got keys {sorted(config)}") from None
