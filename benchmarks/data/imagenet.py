"""ImageNet evaluation images: an ILSVRC-layout ImageFolder or WebDataset shards whose samples carry `.cls`.

    batches, n = imagefolder_batches("/data/imagenet/val", preprocess, batch_size=64, workers=4, limit=None)
    batches = shard_batches("val/{00000..00063}.tar", preprocess, 64, 4, None, skipped={})
    is_shard_spec("val/{00000..00063}.tar")     # True: read as shards, else as a folder

Labels are ILSVRC-2012 class indices (sorted wnid order), so a folder holding only some classes still
gets the right ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from benchmarks.data.files import InputError
from benchmarks.data.shards import ShardSpecError, eval_loader

IMAGEFOLDER_LAYOUT = "DIR/<wnid>/<image>.JPEG (ILSVRC val layout, e.g. DIR/n01440764/x.JPEG)"



class ImageNetFolder(ImageFolder):
    """ImageFolder whose labels are ILSVRC-2012 indices (sorted wnid order), whatever subset is present."""

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        from timm.data import ImageNetInfo

        ilsvrc_index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
        wnids = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        if not wnids:
            raise InputError(f"--data {directory}: no class folders; expected {IMAGEFOLDER_LAYOUT}")
        unknown = [wnid for wnid in wnids if wnid not in ilsvrc_index]
        if unknown:
            raise InputError(f"--data {directory}: folder {unknown[0]!r} is not an ImageNet-1k wnid "
                             f"({len(unknown)} such); expected {IMAGEFOLDER_LAYOUT}")
        return wnids, {wnid: ilsvrc_index[wnid] for wnid in wnids}


def is_shard_spec(data: str | Path) -> bool:
    """WebDataset shards (brace pattern, .tar path or glob, '::' list, or a folder of .tar files)?"""
    text = str(data)
    if ".tar" in text or "{" in text or "::" in text or "*" in text:
        return True
    return Path(text).is_dir() and any(Path(text).glob("*.tar"))


def imagefolder_batches(root: str | Path, transform: Callable, batch_size: int, workers: int,
                        limit: int | None) -> tuple[Iterable[tuple[torch.Tensor, torch.Tensor]], int]:
    """(batches of (images, targets), number of images) from an ILSVRC-layout folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: no such directory; expected {IMAGEFOLDER_LAYOUT} "
                         "or WebDataset shards with .cls")
    try:
        dataset = ImageNetFolder(str(root), transform=transform)
    except FileNotFoundError as exc:  # a class folder without images
        raise InputError(f"--data {root}: {exc}; expected {IMAGEFOLDER_LAYOUT}") from None
    if limit is not None and limit < len(dataset):
        # evenly spaced, so a limited run still covers the classes (samples are sorted by class)
        keep = np.unique(np.linspace(0, len(dataset) - 1, limit).round().astype(int)).tolist()
        dataset = torch.utils.data.Subset(dataset, keep)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    return loader, len(dataset)


def shard_batches(spec: str, transform: Callable, batch_size: int, workers: int, limit: int | None,
                  skipped: dict[str, int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, targets) batches from WebDataset shards whose samples carry ``.cls``; fills ``skipped``
    with webdata's counts of bad samples once the shards are read."""
    try:
        loader = eval_loader(spec, transform, batch_size, workers, with_class=True)
    except ShardSpecError as exc:
        raise InputError(f"--data {spec}: {exc}") from None
    seen = 0
    for images, _captions, classes, _keys in loader:
        if limit is not None and seen + len(images) > limit:
            images, classes = images[:limit - seen], classes[:limit - seen]
        yield images, classes
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    skipped.update(loader.skipped())
