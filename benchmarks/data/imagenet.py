"""ImageNet evaluation images: an ILSVRC-layout ImageFolder, an ImageNetV2 folder, or WebDataset shards
whose samples carry `.cls`; each process of a distributed evaluation reads its own share.

    batches, n = imagefolder_batches("/data/imagenet/val", preprocess, batch_size=64, workers=4, limit=None)
    batches, n = imagefolder_batches("imagenetv2-matched-frequency-format-val", preprocess, 64, 4, None,
                                     rank=1, world_size=8)    # batches 1, 9, 17, ... of the whole
    batches = shard_batches("val/{00000..00063}.tar", preprocess, 64, 4, None, skipped={})
    is_shard_spec("val/{00000..00063}.tar")     # True: read as shards, else as a folder

Labels are ILSVRC-2012 class indices: sorted wnid order for synset folders (`n01440764`), the folder
name itself for ImageNetV2's class-index folders (`0` .. `999`, as its release lays them out), so a
folder holding only some classes still gets the right ones. Every batch is (images, targets, ids):
ids give each image's place in the whole evaluation (None for shards, read in shard order).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from benchmarks.data.files import InputError
from benchmarks.data.shards import EvalLoader, ShardSpecError, eval_dataset, ignore_stop_signals

IMAGEFOLDER_LAYOUT = ("DIR/<wnid>/<image>.JPEG (ILSVRC val layout, e.g. DIR/n01440764/x.JPEG) or "
                      "DIR/<class index>/<image> (ImageNetV2 layout, DIR/0 .. DIR/999)")
NUM_CLASSES = 1000

class ImageNetFolder(ImageFolder):
    """ImageFolder whose labels are ILSVRC-2012 indices (sorted wnid order, or ImageNetV2's folder
    names), whatever subset is present; samples in class order, as in the ILSVRC layout."""

    def __init__(self, root: str, transform: Callable | None = None):
        super().__init__(root, transform=transform)
        # torchvision walks folders in name order ("10" before "2"); class order makes both layouts
        # of one image set the same sequence, so --limit and distributed shares pick the same images
        self.samples.sort(key=lambda sample: sample[1])
        self.imgs, self.targets = self.samples, [target for _, target in self.samples]

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        from timm.data import ImageNetInfo

        ilsvrc_index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
        wnids = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        if not wnids:
            raise InputError(f"--data {directory}: no class folders; expected {IMAGEFOLDER_LAYOUT}")
        if all(name.isdigit() for name in wnids):
            return class_index_folders(directory, wnids)
        unknown = [wnid for wnid in wnids if wnid not in ilsvrc_index]
        if unknown:
            raise InputError(f"--data {directory}: folder {unknown[0]!r} is not an ImageNet-1k wnid "
                             f"({len(unknown)} such); expected {IMAGEFOLDER_LAYOUT}")
        return wnids, {wnid: ilsvrc_index[wnid] for wnid in wnids}


def class_index_folders(directory: str | os.PathLike, names: list[str]) -> tuple[list[str], dict[str, int]]:
    """ImageNetV2's layout: the folder name is the class index (``"7"`` is class 7, not the 8th folder
    in sorted order, where ``"10"`` would come before ``"2"``)."""
    outside = [name for name in names if int(name) >= NUM_CLASSES]
    if outside:
        raise InputError(f"--data {directory}: class folder {outside[0]!r} is outside 0..{NUM_CLASSES - 1}; "
                         f"expected {IMAGEFOLDER_LAYOUT}")
    names = sorted(names, key=int)
    return names, {name: int(name) for name in names}


def share_of_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """Indices of the batches ``rank`` takes (every ``world_size``-th batch of the whole, from ``rank``),
    so each process's batches are exactly batches of the single-process run."""
    starts = range(rank * batch_size, n, world_size * batch_size)
    return [i for start in starts for i in range(start, min(start + batch_size, n))]


class _WithIds(torch.utils.data.Dataset):
    """(image, target, id) where id is the sample's position in the whole (limited) evaluation."""

    def __init__(self, dataset: torch.utils.data.Dataset, ids: list[int]):
        self.dataset, self.ids = dataset, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple:
        image, target = self.dataset[self.ids[index]]
        return image, target, self.ids[index]


def is_shard_spec(data: str | Path) -> bool:
    """WebDataset shards (brace pattern, .tar path or glob, '::' list, or a folder of .tar files)?"""
    text = str(data)
    if ".tar" in text or "{" in text or "::" in text or "*" in text:
        return True
    return Path(text).is_dir() and any(Path(text).glob("*.tar"))


def imagefolder_batches(root: str | Path, transform: Callable, batch_size: int, workers: int,
                        limit: int | None, rank: int = 0, world_size: int = 1
                        ) -> tuple[Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
    """(batches of (images, targets, ids), number of images this process reads) from a folder in
    ILSVRC or ImageNetV2 layout; ``rank`` of ``world_size`` reads its share (``share_of_batches``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: no such directory; expected {IMAGEFOLDER_LAYOUT} "
                         "or WebDataset shards with .cls")
    try:
        dataset = ImageNetFolder(str(root), transform=transform)
    except FileNotFoundError as exc:  # a class folder without images
        raise InputError(f"--data {root}: {exc}; expected {IMAGEFOLDER_LAYOUT}") from None
    keep = list(range(len(dataset)))
    if limit is not None and limit < len(dataset):
        # evenly spaced, so a limited run still covers the classes (samples are sorted by class)
        keep = np.unique(np.linspace(0, len(dataset) - 1, limit).round().astype(int)).tolist()
    ids = share_of_batches(len(keep), batch_size, rank, world_size)
    mine = _WithIds(torch.utils.data.Subset(dataset, keep), ids)
    loader = torch.utils.data.DataLoader(mine, batch_size=batch_size, num_workers=workers, shuffle=False,
                                         worker_init_fn=ignore_stop_signals if workers else None)
    return loader, len(mine)


def shard_batches(spec: str, transform: Callable, batch_size: int, workers: int, limit: int | None,
                  skipped: dict[str, int], rank: int = 0, world_size: int = 1
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
    """(images, targets, None) batches from WebDataset shards whose samples carry ``.cls``; ``rank`` of
    ``world_size`` reads shards rank, rank + world_size, ... and at most its part of ``limit``. Fills
    ``skipped`` with webdata's counts of bad samples once the shards are read."""
    try:
        loader = EvalLoader(eval_dataset(spec, transform, batch_size, with_class=True, rank=rank,
                                         world_size=world_size), workers)
    except ShardSpecError as exc:
        raise InputError(f"--data {spec}: {exc}") from None
    if limit is not None:  # the first `limit` of one process; an equal part of it for each of several
        limit = limit // world_size + (rank < limit % world_size)
    seen = 0
    for images, _captions, classes, _keys in ([] if limit == 0 else loader):
        if limit is not None and seen + len(images) > limit:
            images, classes = images[:limit - seen], classes[:limit - seen]
        yield images, classes, None
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    skipped.update(loader.skipped())
