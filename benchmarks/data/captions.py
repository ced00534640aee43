"""Captioned images for retrieval and word-order tasks: a folder with `captions.tsv`, or the toy val split.

    data = load_caption_folder(shared_data_dir() / "captions")   # COCO: 159 images, 795 captions
    data = load_toy_split(limit=500)                              # one caption per toy image
    data.captions[t], data.caption_image[t], data.open_image(i)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.data import toy as toy_data
from benchmarks.data.files import InputError
from benchmarks.data.shards import ShardSpecError, eval_loader

CAPTIONS_LAYOUT = "DIR/captions.tsv (file<TAB>caption, file relative to DIR, e.g. images/x.jpg) + the images"


@dataclass
class CaptionedImages:
    """Images (loaded lazily by ``open_image``) and captions; ``caption_image[t]``: image of caption t."""

    name: str
    image_ids: list[str]
    captions: list[str]
    caption_image: list[int]
    open_image: Callable[[int], Image.Image]


def load_caption_folder(root: str | Path) -> CaptionedImages:
    """A folder with ``captions.tsv`` (one header line, split on tab: captions contain quotes)."""
    root = Path(root)
    table = root / "captions.tsv"
    if not table.is_file():
        raise InputError(f"--data {root}: no captions.tsv; expected {CAPTIONS_LAYOUT}")
    lines = table.read_text(encoding="utf-8").rstrip("\n").split("\n")
    if lines[0].split("\t") != ["file", "caption"]:
        raise InputError(f"{table}: header must be file<TAB>caption")
    image_ids: list[str] = []
    index: dict[str, int] = {}
    captions, caption_image = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2:
            raise InputError(f"{table}:{number}: expected file<TAB>caption")
        if fields[0] not in index:
            if not (root / fields[0]).is_file():
                raise InputError(f"{table}:{number}: image {root / fields[0]} not found")
            index[fields[0]] = len(image_ids)
            image_ids.append(fields[0])
        captions.append(fields[1])
        caption_image.append(index[fields[0]])
    return CaptionedImages(root.name, image_ids, captions, caption_image,
                           lambda i: Image.open(root / image_ids[i]).convert("RGB"))


def load_toy_split(data: str | None = None, limit: int | None = None) -> CaptionedImages:
    """The toy data set's val split (``data``: toy cache root or val shard pattern), one caption each."""
    val = data if data is not None and ".tar" in data else toy_data.ensure_toy(data).val
    images: list[Image.Image] = []
    keys: list[str] = []
    captions: list[str] = []
    try:
        for batch_images, batch_captions, _classes, batch_keys in eval_loader(val, None, batch_size=256):
            images += batch_images
            captions += batch_captions
            keys += batch_keys
            if limit is not None and len(keys) >= limit:
                break
    except ShardSpecError as exc:
        raise InputError(f"--toy-root {val}: {exc}") from None
    images, keys, captions = images[:limit], keys[:limit], captions[:limit]
    return CaptionedImages("toy", keys, captions, list(range(len(keys))), images.__getitem__)
