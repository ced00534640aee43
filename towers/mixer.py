"""The MLP-Mixer family: timm's MlpMixer as the image tower, and a Mixer text tower of our own.

Image: timm's `MlpMixer` used as a library, with no classifier head (`num_classes=0`), so it returns
the average-pooled, layer-normed token features of width `embed_dim`. Its B/32 trunk has the sizes of
timm's `mixer_b32_224`.

Text (the one piece no library provides): token embedding + learned positional embedding over the
fixed 77-token context, L blocks of [LayerNorm -> token-mixing MLP across the 77 positions ->
residual, LayerNorm -> channel MLP (timm's `Mlp`) -> residual], a final LayerNorm, and pooling at the
EOT token (the largest id of each row), exactly where CLIP's text Transformer pools.

Token mixing (`token_mixing`, `--token-mixing`) is one of the modes of `towers.token_mixing`: `causal`
(MADE masks, uniform degrees), `causal-front` (MADE, degrees front-loaded where captions end),
`caption` (bidirectional inside the caption, positions after EOT zeroed), `triangular` (one
lower-triangular L x L map), `causal-prefix` (the caption MLP on each position's prefix), all pad-inert
like the causal Transformer; and `full`, the seed paper's mixing of all 77 positions, padding included
(for replication). The recipe's `--text-mask` picks `caption` or `causal-prefix` (towers.text_mask).

Build one with `towers.build_tower("mixer", "text", "B/32")`.
"""

from __future__ import annotations

from functools import partial

import torch
from open_clip.transformer import AttentionalPooler
from timm.layers import DropPath, Mlp, lecun_normal_
from timm.models.mlp_mixer import MlpMixer
from torch import nn
from torch.utils.checkpoint import checkpoint

from runfolder.vocabulary import IMAGE_INITS, IMAGE_POOLS, check_choice
from towers.preprocess import CONTEXT_LENGTH, VOCAB_SIZE
from towers.text_mask import resolve_token_mixing
from towers.token_mixing import (  # noqa: F401  (made_degrees, the modes: re-exported)
    DEFAULT_TOKEN_MIXING,
    PAD_INERT_MODES,
    TOKEN_MIXING_MODES,
    build_token_mixing,
    made_degrees,
)

VARIANTS: dict[str, dict] = {
    # timm mixer_s32_224 trunk; text sized like open_clip ViT-S-32's text tower.
    "S/32": {
        "embed_dim": 384,
        "image": dict(image_size=224, patch_size=32, width=512, layers=8, mlp_ratio=(0.5, 4.0)),
        "text": dict(width=384, layers=12, token_hidden=256, channel_hidden=1536),
    },
    # timm mixer_b32_224 trunk + 12-layer width-512 Mixer text tower.
    "B/32": {
        "embed_dim": 512,
        "image": dict(image_size=224, patch_size=32, width=768, layers=12, mlp_ratio=(0.5, 4.0)),
        "text": dict(width=512, layers=12, token_hidden=256, channel_hidden=2048),
    },
    # timm mixer_b16_224 trunk.
    "B/16": {
        "embed_dim": 512,
        "image": dict(image_size=224, patch_size=16, width=768, layers=12, mlp_ratio=(0.5, 4.0)),
        "text": dict(width=512, layers=12, token_hidden=256, channel_hidden=2048),
    },
}
# The scaling-law ladder (docs/scaling-laws.md): the toy resolution and depth at widths 64-256, the same
# widths as the Transformer's ladder; w128 is also `tiny` (runfolder.vocabulary.VARIANT_ALIASES).
# Token-mixing hidden 2 x width = 4 units per token, inside the Mixer paper's 2-8 per token; timm's
# 0.5 x width would give 1 per token at this size (docs/design.md has the toy results).
VARIANTS.update({
    f"w{width}": {
        "embed_dim": width,
        "image": dict(image_size=64, patch_size=8, width=width, layers=4, mlp_ratio=(2.0, 4.0)),
        "text": dict(width=width, layers=4, token_hidden=2 * width, channel_hidden=4 * width),
    } for width in (64, 96, 128, 192, 256)
})


class MixerImageTower(MlpMixer):
    """timm's MlpMixer without a head: (B, 3, H, W) -> (B, width) mean-pooled features.

    `init="original"` re-initialises it with the Flax defaults of the Mixer paper's JAX code (LeCun
    normal weights, zero biases; timm's default is Xavier-uniform with 1e-6 MLP biases); `pool="map"`
    pools with one learned query (open_clip's AttentionalPooler, head width 32) instead of the mean."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int,
                 mlp_ratio: tuple[float, float] = (0.5, 4.0), drop_path_rate: float = 0.0,
                 init: str = "library", pool: str = "library"):
        check_choice("image init", init, IMAGE_INITS)
        check_choice("image pool", pool, IMAGE_POOLS)
        super().__init__(num_classes=0, img_size=image_size, patch_size=patch_size,
                         num_blocks=layers, embed_dim=width, mlp_ratio=mlp_ratio,
                         drop_path_rate=drop_path_rate)
        self.width = width
        self.image_size = (image_size, image_size)
        # `avg` is the Mixer's own pooling: the same module as `library`
        self.attn_pool = AttentionalPooler(width, width, n_head=max(width // 32, 1), n_queries=1) \
            if pool == "map" else None
        if init == "original":
            self.init_original()

    @torch.no_grad()
    def init_original(self) -> None:
        """Flax's defaults, as the Mixer paper's code trained it: LeCun normal for every dense and conv
        weight, zero biases, LayerNorm scale 1 and shift 0 (the pooler's query keeps its N(0, 1))."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                lecun_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.attn_pool is None:
            return super().forward_head(x, pre_logits=pre_logits)
        return self.attn_pool(x)[:, 0]


class MixerTextBlock(nn.Module):
    """One Mixer block over a token sequence (B, L, C): token mixing, then channel mixing."""

    def __init__(self, width: int, positions: int, token_hidden: int, channel_hidden: int,
                 mode: str = DEFAULT_TOKEN_MIXING, drop_path: float = 0.0):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)  # timm's Mixer norm
        self.norm1 = norm(width)
        self.mlp_tokens = build_token_mixing(mode, positions, token_hidden)
        self.norm2 = norm(width)
        self.mlp_channels = Mlp(width, channel_hidden, act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, C) -> (B, L, C); `keep` (B, 1, L): positions up to each row's EOT (`caption` mixing)."""
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2), keep).transpose(1, 2))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class MixerTextTower(nn.Module):
    """Mixer text tower: (B, context_length) token ids -> (B, width) feature at the EOT token."""

    def __init__(self, width: int, layers: int, token_hidden: int, channel_hidden: int,
                 token_mixing: str = DEFAULT_TOKEN_MIXING, context_length: int = CONTEXT_LENGTH,
                 vocab_size: int = VOCAB_SIZE, drop_path_rate: float = 0.0):
        super().__init__()
        self.width = width
        self.context_length = context_length
        self.token_mixing = token_mixing
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        rates = [drop_path_rate * i / max(layers - 1, 1) for i in range(layers)]  # timm's linear rule
        self.blocks = nn.ModuleList(
            MixerTextBlock(width, context_length, token_hidden, channel_hidden, token_mixing, rate)
            for rate in rates
        )
        self.ln_final = nn.LayerNorm(width, eps=1e-6)
        self.grad_checkpointing = False
        self.init_parameters()

    def init_parameters(self) -> None:
        # Embeddings as CLIP's text Transformer; linear layers as timm's Mixer (xavier, zero bias).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @property
    def stops_at_eot(self) -> bool:
        """Pad-inert token mixing never lets a position after EOT reach the EOT feature, so a batch may
        stop at its longest EOT; full mixing reads all of them, padding included."""
        return self.token_mixing in PAD_INERT_MODES

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, context_length) token ids -> (B, width); pad-inert mixing also takes the first L positions."""
        length = tokens.shape[1]
        if length != self.context_length and not (self.stops_at_eot and length < self.context_length):
            expected = "at most" if self.stops_at_eot else "exactly"
            raise ValueError(f"Mixer text tower ({self.token_mixing} token mixing) takes {expected} "
                             f"{self.context_length} tokens per text, got {length}")
        eot = tokens.argmax(dim=-1)
        keep = None
        if self.token_mixing == "caption":
            keep = (torch.arange(length, device=tokens.device) <= eot[:, None])[:, None, :]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, keep, use_reentrant=False)
            else:
                x = block(x, keep)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot]


def text_mask_overrides(text_mask: str, token_mixing: str | None = None) -> dict:
    """Text-tower overrides that apply `text_mask`: the token mixing it selects, or the explicit mode."""
    return {"token_mixing": resolve_token_mixing(text_mask, token_mixing)}


def build(modality: str, **config) -> nn.Module:
    """Build the `image` or `text` tower from a resolved variant config."""
    if modality == "image":
        return MixerImageTower(**config)
    return MixerTextTower(**config)
