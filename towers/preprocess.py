"""Text tokenisation and image preprocessing shared by every tower.

Both are open_clip's own: `tokenize` is open_clip's SimpleTokenizer (the same BPE ids as OpenAI's
CLIP, EOT being the largest id of each row, so EOT pooling is `argmax`), and `image_transform` is
open_clip's `image_transform` with the OpenAI mean/std. Every tower, Transformer or Mixer, sees the
same inputs, so a score difference can only come from the tower.

    from towers import tokenize, image_transform
    tokens = tokenize(["a red circle"])              # LongTensor (1, 77)
    preprocess = image_transform(224, train=False)   # PIL.Image -> FloatTensor (3, 224, 224)
"""

from __future__ import annotations

from collections.abc import Callable

import open_clip
import torch
from open_clip.transform import AugmentationCfg

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
# open_clip's default train crop scale for CLIP pretraining.
TRAIN_CROP_SCALE = (0.9, 1.0)


def tokenize(texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.LongTensor:
    """Token ids (B, context_length) with open_clip's tokenizer; over-long texts are truncated
    (EOT kept as the last token)."""
    return open_clip.tokenize(texts, context_length=context_length)


def image_transform(image_size: int, train: bool) -> Callable:
    """open_clip's CLIP transform: bicubic resize + centre crop (eval) or random resized crop
    (train), RGB conversion, OpenAI normalisation."""
    aug = AugmentationCfg(scale=TRAIN_CROP_SCALE) if train else None
    return open_clip.image_transform(image_size, is_train=train, aug_cfg=aug)
