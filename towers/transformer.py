"""The Transformer family: CLIP's ViT image tower and text Transformer, as open_clip builds them.

Both towers are open_clip's own modules (`VisionTransformer`, `TextTransformer`), not a
re-implementation, so open_clip and OpenAI weights load and give the same embeddings. The only
change is that the towers stop before the projection: the two-tower `towers.clip.CLIP` owns the
projections and the temperature identically for every family (open_clip's `visual.proj` and
`text_projection` are mapped onto it when a checkpoint loads, see `towers.checkpoints`).

Variants follow open_clip's model configs (`ViT-S-32`, `ViT-B-32`, `ViT-B-16`), plus `tiny` for CPU
tests. Build one with `towers.build_tower("transformer", "image", "B/32")`.
"""

from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU, TextTransformer, VisionTransformer, text_global_pool
from torch import nn

from runfolder.vocabulary import IMAGE_INITS, IMAGE_POOLS, check_choice
from towers.preprocess import CONTEXT_LENGTH, VOCAB_SIZE
from towers.text_mask import caption_attention_mask, check_text_mask

# Every number that sizes a tower. `heads` follows open_clip's head width of 64 (tiny: 32).
VARIANTS: dict[str, dict] = {
    "S/32": {
        "embed_dim": 384,
        "image": dict(image_size=224, patch_size=32, width=384, layers=12, heads=6, mlp_ratio=4.0),
        "text": dict(width=384, layers=12, heads=6, mlp_ratio=4.0),
    },
    "B/32": {
        "embed_dim": 512,
        "image": dict(image_size=224, patch_size=32, width=768, layers=12, heads=12, mlp_ratio=4.0),
        "text": dict(width=512, layers=12, heads=8, mlp_ratio=4.0),
    },
    "B/16": {
        "embed_dim": 512,
        "image": dict(image_size=224, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0),
        "text": dict(width=512, layers=12, heads=8, mlp_ratio=4.0),
    },
}
# The scaling-law ladder (docs/scaling-laws.md): the toy resolution and depth, widths 64-256 (16x the
# width-64 training FLOPs per sample), head width 32; w128 is also `tiny` (runfolder.vocabulary).
VARIANTS.update({
    f"w{width}": {
        "embed_dim": width,
        "image": dict(image_size=64, patch_size=8, width=width, layers=4, heads=width // 32, mlp_ratio=4.0),
        "text": dict(width=width, layers=4, heads=width // 32, mlp_ratio=4.0),
    } for width in (64, 96, 128, 192, 256)
})


def _activation(quick_gelu: bool) -> type[nn.Module]:
    # OpenAI's released weights were trained with QuickGELU; open_clip's own configs use nn.GELU.
    return QuickGELU if quick_gelu else nn.GELU


# open_clip's own pooling options for each `pool` value (runfolder.vocabulary.IMAGE_POOLS)
_POOL_KWARGS = {
    "library": {},  # the class token
    "avg": {"pool_type": "avg"},  # the mean of the patch tokens, the class token left out
    # one learned query attends over every token (open_clip's AttentionalPooler, its CoCa order)
    "map": {"attentional_pool": True, "attn_pooler_queries": 1},
}


class TransformerImageTower(VisionTransformer):
    """open_clip's ViT, ending at the pooled, layer-normed class token (no projection).

    `init="original"` gives it CLIP's normal init (the scheme open_clip applies to its text Transformer and
    left commented out for the ViT); `pool` picks the pooled feature (runfolder.vocabulary)."""

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 mlp_ratio: float = 4.0, quick_gelu: bool = False, init: str = "library",
                 pool: str = "library"):
        check_choice("image init", init, IMAGE_INITS)
        pool_kwargs = dict(_POOL_KWARGS[check_choice("image pool", pool, IMAGE_POOLS)])
        if pool == "map":
            pool_kwargs["attn_pooler_heads"] = heads
        super().__init__(image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                         heads=heads, mlp_ratio=mlp_ratio, output_dim=width,
                         act_layer=_activation(quick_gelu), **pool_kwargs)
        # open_clip's `forward` skips the projection when `proj` is None (as its prune_head does).
        self.proj = None
        self.width = width
        if init == "original":
            self.init_original()

    @torch.no_grad()
    def init_original(self) -> None:
        """CLIP's normal init: embeddings N(0, width^-0.5), attention inputs N(0, width^-0.5), the MLP's
        first layer N(0, (2 width)^-0.5) and both residual outputs N(0, width^-0.5 (2 layers)^-0.5)."""
        width, layers = self.transformer.width, self.transformer.layers
        nn.init.normal_(self.class_embedding, std=width ** -0.5)
        nn.init.normal_(self.positional_embedding, std=width ** -0.5)
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, width)."""
        return super().forward(images)


class TransformerTextTower(TextTransformer):
    """open_clip's text Transformer, pooled at the EOT token (argmax id), no projection.

    `text_mask` (towers.text_mask): `causal` is open_clip's own causal mask (the default, so names,
    older checkpoints and open_clip/OpenAI weights keep it); `caption` is the same modules and parameters
    with attention to every key up to each row's EOT and none after it."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                 context_length: int = CONTEXT_LENGTH, vocab_size: int = VOCAB_SIZE,
                 quick_gelu: bool = False, text_mask: str = "causal"):
        super().__init__(context_length=context_length, vocab_size=vocab_size, width=width,
                         heads=heads, layers=layers, mlp_ratio=mlp_ratio, output_dim=None,
                         proj_type="none", act_layer=_activation(quick_gelu))
        self.text_mask = check_text_mask(text_mask)

    # Both masks keep every key after EOT from the EOT query, so a batch may stop at its longest EOT.
    stops_at_eot = True

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids, L <= context_length -> (B, width), pooled at each row's EOT."""
        length = tokens.shape[1]
        if length == self.num_pos and self.text_mask == "causal":
            return super().forward(tokens)  # open_clip's forward itself: parity is exact
        if length > self.num_pos:
            raise ValueError(f"text tower takes at most {self.num_pos} tokens per text, got {length}")
        # open_clip's own pieces; its `_embeds` slices the positional embedding but not the causal mask
        x, attn_mask = self._embeds(tokens)
        if self.text_mask == "caption":  # in the residual stream's dtype: open_clip casts it per block
            attn_mask = caption_attention_mask(tokens, self.heads, x.dtype)
        else:
            attn_mask = attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=attn_mask)
        return text_global_pool(self.ln_final(x), tokens, pool_type=self.pool_type)


def text_mask_overrides(text_mask: str, token_mixing: str | None = None) -> dict:
    """Text-tower overrides that apply `text_mask` (the Transformer has no token mixing)."""
    return {"text_mask": check_text_mask(text_mask)}


def build(modality: str, **config) -> nn.Module:
    """Build the `image` or `text` tower from a resolved variant config."""
    if modality == "image":
        return TransformerImageTower(**config)
    return TransformerTextTower(**config)
