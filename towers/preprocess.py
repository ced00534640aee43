"""Text tokenisation and image preprocessing shared by every tower.

Both are open_clip's own: `tokenize` is open_clip's SimpleTokenizer (the same BPE ids as OpenAI's
CLIP, EOT being the largest id of each row, so EOT pooling is `argmax`; ids equal to
`open_clip.tokenize`'s, tested, with a fast path for plain captions, see `_words`), and `image_transform` is
open_clip's `image_transform` with the OpenAI mean/std. Every tower, Transformer or Mixer, sees the
same inputs, so a score difference can only come from the tower.

    from towers import tokenize, image_transform
    tokens = tokenize(["a red circle"])              # LongTensor (1, 77)
    preprocess = image_transform(224, train=False)   # PIL.Image -> FloatTensor (3, 224, 224)
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer, basic_clean, whitespace_clean
from open_clip.transform import AugmentationCfg

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
# open_clip's default train crop scale for CLIP pretraining.
TRAIN_CROP_SCALE = (0.9, 1.0)


_TOKENIZER = SimpleTokenizer()  # open_clip's vocabulary, word pattern and BPE

# Printable ASCII without '&': on such text open_clip's cleaning (ftfy, HTML unescaping) is the identity
# and its Unicode word pattern matches what this ASCII one does, so both are skipped (docs/design.md).
_PLAIN_TEXT = re.compile(r"[\x20-\x25\x27-\x7e]*")
_PLAIN_WORD = re.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+",
                         re.IGNORECASE)


def _words(text: str) -> list[str]:
    """open_clip's cleaning ("lower") and word split of one text, its no-op steps skipped on plain text."""
    if _PLAIN_TEXT.fullmatch(text):
        return _PLAIN_WORD.findall(" ".join(text.split()).lower())
    return _TOKENIZER.pat.findall(whitespace_clean(basic_clean(text)).lower())


_WORD_IDS: dict[str, tuple[int, ...]] = {}  # word -> BPE ids; open_clip caches only the BPE string
_MAX_CACHED_WORDS = 1 << 18


def _word_ids(word: str) -> tuple[int, ...]:
    ids = _WORD_IDS.get(word)
    if ids is None:
        encoder, byte_encoder = _TOKENIZER.encoder, _TOKENIZER.byte_encoder
        pieces = _TOKENIZER.bpe("".join(byte_encoder[b] for b in word.encode("utf-8")))
        ids = tuple(encoder[piece] for piece in pieces.split(" "))
        if len(_WORD_IDS) < _MAX_CACHED_WORDS:
            _WORD_IDS[word] = ids
    return ids


def tokenize(texts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.LongTensor:
    """Token ids (B, context_length) with open_clip's tokenizer; over-long texts are truncated
    (EOT kept as the last token), exactly as `open_clip.tokenize`."""
    if isinstance(texts, str):
        texts = [texts]
    sot, eot = _TOKENIZER.sot_token_id, _TOKENIZER.eot_token_id
    result = np.zeros((len(texts), context_length), dtype=np.int64)  # filled in numpy, then one tensor
    for row, text in enumerate(texts):
        ids = [sot]
        for word in _words(text):
            ids.extend(_word_ids(word))
        del ids[context_length - 1:]
        ids.append(eot)
        result[row, :len(ids)] = ids
    return torch.from_numpy(result)


def image_transform(image_size: int, train: bool) -> Callable:
    """open_clip's CLIP transform: bicubic resize + centre crop (eval) or random resized crop
    (train), RGB conversion, OpenAI normalisation."""
    aug = AugmentationCfg(scale=TRAIN_CROP_SCALE) if train else None
    return open_clip.image_transform(image_size, is_train=train, aug_cfg=aug)
