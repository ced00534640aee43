"""The CNN family, a calibration arm: timm's ResNet as the image tower beside CLIP's text Transformer.

This is CLIP's ResNet pairing (OpenAI's RN50 CLIP: a ResNet image encoder, the same text Transformer as
its ViT models), so the text tower *is* the Transformer family's, at the same variant (its table rows,
`build` and `text_mask_overrides` are `towers.transformer`'s, not copies): `--tower cnn` trains a ResNet
image tower with the Transformer text tower, and a cnn run differs from a transformer run in its image
tower only.

Image: timm's `ResNet` used as a library, no classifier head (`num_classes=0`): (B, 3, H, W) -> (B, width)
average-pooled features of the last stage, `width` = its channels (x4 with Bottleneck blocks).
- The 64-px rows (`tiny` = `w128`, the ladder `w64`-`w256`) are timm's resnet18 (BasicBlock, 2-2-2-2)
  with channels (w/8, w/4, w/2, w), on timm's deep stem (three 3x3 convs of w/16, w/16, w/8 channels, as
  CLIP's ModifiedResNet's stem; timm's 7x7 stem has 64 channels whatever the width) without its max-pool:
  /16 in all, a 4x4 map at 64 px. A ResNet's usual /32 would leave 2x2, its last stage's 3x3 convs then
  mostly padding; a stride-1 stem (/8, the ViT's 8x8 patch grid) would cost 2.5x the ViT's FLOPs, where
  /16 costs 0.6x (docs/usage.md has the counts).
- `S/32`, `B/32`, `B/16` are timm's resnet18, resnet34 and resnet50 trunks exactly (7x7 stem, max-pool,
  /32: 7x7 at 224 px), widths 512, 512 and 2048.

`init`: `library` is timm's (Kaiming-normal convs, fan-out; the last BatchNorm of each residual branch
zero, so every block starts as the identity). `original` is CLIP's ModifiedResNet's: PyTorch's default
conv init (sqrt(6) = 2.4x smaller weights for a 3x3 conv with as many inputs as outputs: the same
forward through BatchNorm, larger relative AdamW steps), the same zero last BatchNorm, and with
`pool="map"` the pooler's projections N(0, width^-0.5) as CLIP's AttentionPool2d.
`pool`: `library` and `avg` are the same mean over the map; `map` pools with one learned query
(open_clip's AttentionalPooler, head width 32, as the Mixer's), close to CLIP's ResNets, whose
AttentionPool2d attends from the mean.

BatchNorm (the only family with batch statistics):
- training (`model.train()`): each BatchNorm normalises with its micro-batch's statistics on its own
  process, at the toy's batch 128 over 128 x 32 x 32 positions a channel in the stem and 128 x 4 x 4 in
  the last stage, and moves its running mean and variance 0.1 towards them (momentum 0.1, PyTorch's and
  timm's: an average over about the last 10 steps). A pass that re-runs a micro-batch (gradient
  accumulation's feature cache, activation checkpointing's recompute) counts that batch twice. Under DDP
  each process normalises with its own per-process batch (no SyncBatchNorm, as CLIP trained its ResNets)
  and the trainer has DDP broadcast process 0's buffers before each forward (for towers with running
  statistics only; launch.trainer.keeps_running_statistics), so every process evaluates and checkpoints
  process 0's running statistics, as open_clip's DDP does for CLIP's ResNets. Accumulation is
  therefore not exactly a larger batch for this family.
  At B/32 on 16 GPUs x 256 a process's BatchNorm sees 256 images (7 x 7 positions each in the last
  stage) a step, and its running statistics average about the last 10 steps of that process.
- eval (`model.eval()`: what `towers.load` returns and what the zero-shot encoder sets): the running
  statistics, so an image's features do not depend on the batch it is scored in. They are buffers in
  the state dict, saved and restored with the weights by checkpoints and `towers.export`.
- a forward with a non-finite batch statistic (a step the trainer then skips) leaves the running
  statistics as they were (`FiniteBatchNorm2d`), so one bad step cannot spoil every later evaluation.

    tower = towers.build_tower("cnn", "image", "w96")        # (B, 3, 64, 64) -> (B, 96)
    model = towers.create_model("cnn-B-32")                  # resnet34 + ViT-B/32's text Transformer
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import AttentionalPooler
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from runfolder.vocabulary import IMAGE_INITS, IMAGE_POOLS
from towers import transformer

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
# timm's resnet18 / resnet34 / resnet50 stage widths (a Bottleneck stage's output is 4x these)
RESNET_CHANNELS = (64, 128, 256, 512)


def _toy_image(width: int) -> dict:
    """resnet18's blocks at 64 px: channels (w/8, w/4, w/2, w), deep stem of w/16, no stem max-pool."""
    return dict(image_size=64, block="basic", layers=(2, 2, 2, 2),
                channels=(width // 8, width // 4, width // 2, width),
                deep_stem=True, stem_width=width // 16, stem_pool=False)


# The image rows; `embed_dim` and the text rows are the Transformer family's own (shared, not copied).
_IMAGE_ROWS: dict[str, dict] = {
    # timm's resnet18, resnet34 and resnet50 trunks (tests/test_towers_cnn.py checks them against timm)
    "S/32": dict(image_size=224, block="basic", layers=(2, 2, 2, 2), channels=RESNET_CHANNELS),
    "B/32": dict(image_size=224, block="basic", layers=(3, 4, 6, 3), channels=RESNET_CHANNELS),
    "B/16": dict(image_size=224, block="bottleneck", layers=(3, 4, 6, 3), channels=RESNET_CHANNELS),
    **{f"w{width}": _toy_image(width) for width in (64, 96, 128, 192, 256)},
}
VARIANTS: dict[str, dict] = {
    name: {"embed_dim": transformer.VARIANTS[name]["embed_dim"], "image": image,
           "text": transformer.VARIANTS[name]["text"]}
    for name, image in _IMAGE_ROWS.items()
}


class FiniteBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose running statistics keep their last finite values. The trainer skips a step with
    a non-finite loss or gradient and goes on; without this, that step's forward would already have
    written NaN or inf into statistics that every later evaluation and checkpoint reads, for good. Costs
    two copies of 2 x C values a layer a step, and no host sync."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        self._check_input_dim(x)
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        # batch_norm updates these copies in place and saves them for the backward pass, so the
        # buffers are set from them after (setting the saved tensors would break the backward)
        mean, var = self.running_mean.clone(), self.running_var.clone()
        out = F.batch_norm(x, mean, var, self.weight, self.bias, True, momentum, self.eps)
        with torch.no_grad():
            finite = torch.isfinite(mean).all() & torch.isfinite(var).all()
            self.running_mean.copy_(torch.where(finite, mean, self.running_mean))
            self.running_var.copy_(torch.where(finite, var, self.running_var))
        return out


class ResNetImageTower(ResNet):
    """timm's ResNet without a head: (B, 3, H, W) -> (B, width) pooled features of the last stage."""

    def __init__(self, image_size: int, layers: tuple[int, ...], channels: tuple[int, ...] = RESNET_CHANNELS,
                 block: str = "basic", deep_stem: bool = False, stem_width: int = 64, stem_pool: bool = True,
                 drop_path_rate: float = 0.0, init: str = "library", pool: str = "library"):
        if init not in IMAGE_INITS or pool not in IMAGE_POOLS or block not in BLOCKS:
            raise ValueError(f"cnn image tower init {init!r} / pool {pool!r} / block {block!r}: expected one "
                             f"of {list(IMAGE_INITS)} / {list(IMAGE_POOLS)} / {list(BLOCKS)}")
        super().__init__(BLOCKS[block], tuple(layers), num_classes=0, channels=tuple(channels),
                         stem_type="deep" if deep_stem else "", stem_width=stem_width, global_pool="avg",
                         norm_layer=FiniteBatchNorm2d, drop_path_rate=drop_path_rate)
        if not stem_pool:  # the name `maxpool` stays timm's, so its state dict keys do too
            self.maxpool = nn.Identity()
        self.width = self.num_features
        self.image_size = (image_size, image_size)
        # `avg` is the ResNet's own pooling: the same module as `library`
        self.attn_pool = AttentionalPooler(self.width, self.width, n_head=max(self.width // 32, 1),
                                           n_queries=1) if pool == "map" else None
        if init == "original":
            self.init_original()

    @torch.no_grad()
    def init_original(self) -> None:
        """CLIP's ModifiedResNet init: convs and BatchNorms at PyTorch's defaults (Kaiming-uniform with
        a = sqrt(5); scale 1, shift 0, fresh running statistics), then the last BatchNorm of each
        residual branch zero, and an attention pooler's projections N(0, width^-0.5)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()
        for module in self.modules():
            if isinstance(module, (BasicBlock, Bottleneck)):
                module.zero_init_last()
        if self.attn_pool is not None:
            nn.init.normal_(self.attn_pool.attn.in_proj_weight, std=self.width ** -0.5)
            nn.init.normal_(self.attn_pool.attn.out_proj.weight, std=self.width ** -0.5)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.attn_pool is None:
            return super().forward_head(x, pre_logits=pre_logits)
        return self.attn_pool(x.flatten(2).transpose(1, 2))[:, 0]  # (B, C, H, W) -> H*W tokens


text_mask_overrides = transformer.text_mask_overrides


def build(modality: str, **config) -> nn.Module:
    """Build the `image` tower (a ResNet) or the `text` tower (the Transformer family's)."""
    if modality == "image":
        return ResNetImageTower(**config)
    return transformer.build("text", **config)
