"""Reading WebDataset shards in the LAION / img2dataset layout, skipping and counting bad samples.

A shard is a tar of samples `KEY.jpg|jpeg|png|webp` (image) + `KEY.txt` (caption) [+ `KEY.json`,
`KEY.cls` (class index, for zero-shot sets)]. Shards are opened with webdataset's `gopen`, so local
paths, `pipe:...` and http(s) URLs all work. This module is the reading core shared by the benchmarks
(zero-shot on `.cls` shards and on the toy val split) and by `launch.data` (training pipeline).

Public API (stable):

    expand_shards(spec) -> list[str]
        spec: a brace pattern "shards/{00000..01023}.tar", several specs joined by "::", a
        directory (its *.tar files, sorted), a glob, or a list of those. Raises ShardSpecError (a
        ValueError with a one-line message naming the spec) when no shard file exists.
    SKIP_KINDS, SkipCounts
        Bad samples are skipped, never fatal, and counted by kind (a Counter over SKIP_KINDS):
        missing_shard      a shard file that does not exist / cannot be opened (once per opening)
        truncated_tar      a shard that breaks off or has a corrupt header (once per shard); the
                           samples before the break are kept, except the last, possibly incomplete one
        unreadable_member  a sample with a member that is not a regular file (link, device, ...) or
                           that occurs twice
        missing_image      no .jpg/.jpeg/.png/.webp member
        corrupt_image      image bytes PIL cannot decode (corrupt, truncated, unknown format)
        missing_caption    no .txt member
        empty_caption      a caption that is empty or only whitespace
        caption_not_utf8   caption bytes that are not UTF-8
        missing_class      (only with with_class=True) no .cls member, or one that is not an integer
        timeout            a shard whose bytes stopped arriving for `read_timeout` seconds (once per
                           shard; benchmarks.data.timed_read), abandoned like a truncated one
        Each dropped sample counts once, under the first of these that applies. Grayscale, CMYK,
        RGBA, palette (and other) images are converted to RGB, not skipped; long captions are left to
        the tokenizer to truncate.
    Sample(key, image, caption, cls)                      image: PIL RGB, cls: int | None
    iter_samples(urls, counts, with_class=False) -> Iterator[Sample]
        built from iter_shard(url, counts) (raw member bytes per sample; read_samples_at(url, spans)
        reads chosen ones back by their byte offsets) and
        decode_sample(raw, counts, with_class) (Sample or None, counted); load_rgb(bytes) -> PIL RGB;
        check_sample(raw, counts, with_class): the same checks without the image decode (Undecoded)
    WorkerCounts: merges the cumulative counts each DataLoader worker attaches to its batches
    transform_images(transform, images) -> FloatTensor, transformed with one torch thread
    eval_dataset(spec, transform, batch_size=256, with_class=False) -> EvalDataset
        An ordered, finite IterableDataset (no resampling, no shuffling): shards in spec order;
        inside a DataLoader with N workers, worker w reads shards w, w+N, ... (disjoint).
    eval_loader(spec, transform, batch_size=256, workers=0, with_class=False) -> EvalLoader
        for images, captions, classes, keys in eval_loader(...):
            images: FloatTensor (B, 3, H, W) (a list of PIL images when transform is None)
            captions: list[str], classes: LongTensor (B,) or None, keys: list[str]
        loader.skipped() -> {kind: count} over all workers, complete once the loop has ended.
        With several workers, batches arrive round-robin from the workers (deterministic); each
        worker's batches are in shard order.

    python -c "from benchmarks.data.shards import eval_loader; ..."   # no CLI; see
    python -m benchmarks.performance.loader_bench
"""

from __future__ import annotations

import collections
import contextlib
import io
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, default_collate
from webdataset.tariterators import base_plus_ext

# the spec half of this module's API lives in benchmarks.data.shard_specs
from benchmarks.data.shard_specs import SPEC_HELP, ShardSpecError, expand_shards  # noqa: F401
from benchmarks.data.tar_stream import BLOCK, COMPRESSED_MAGIC, TarDamage, iter_entries
from benchmarks.data.timed_read import ShardStalled, TimedStream, kill_command

SKIP_KINDS = (
    "missing_shard",
    "truncated_tar",
    "unreadable_member",
    "missing_image",
    "corrupt_image",
    "missing_caption",
    "empty_caption",
    "caption_not_utf8",
    "missing_class",
    "timeout",
)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class SkipCounts(collections.Counter):
    """Skipped samples by kind (a Counter; kinds are SKIP_KINDS)."""

    def add(self, kind: str, n: int = 1) -> None:
        if kind not in SKIP_KINDS:
            raise ValueError(f"unknown skip kind {kind!r}")
        self[kind] += n

    def as_dict(self) -> dict[str, int]:
        """Every kind, zeros included, in SKIP_KINDS order."""
        return {kind: int(self[kind]) for kind in SKIP_KINDS}


class WorkerCounts:
    """Merges the cumulative SkipCounts that each DataLoader worker attaches to what it yields
    (counting happens in the worker processes; the latest snapshot per worker is the truth)."""

    def __init__(self) -> None:
        self._latest: dict[int, dict[str, int]] = {}

    def update(self, worker: int, counts: dict[str, int]) -> None:
        self._latest[worker] = counts

    def merged(self) -> dict[str, int]:
        total = SkipCounts()
        for counts in self._latest.values():
            total.update(counts)
        return total.as_dict()


class Sample(NamedTuple):
    key: str
    image: Image.Image
    caption: str
    cls: int | None


# ---------------------------------------------------------------- reading


def _seek_plain(stream: Any, offset: int) -> bool:
    """Seek a local, uncompressed shard to `offset`; False (and nothing moved) for a stream that cannot
    seek (a pipe, http) or a compressed one, which are read up to the offset instead."""
    if not getattr(stream, "seekable", lambda: False)():
        return False
    head = stream.read(BLOCK)
    stream.seek(0 if any(head.startswith(magic) for magic, _ in COMPRESSED_MAGIC) else offset)
    return stream.tell() == offset and not any(head.startswith(magic) for magic, _ in COMPRESSED_MAGIC)


def iter_shard(url: str, counts: SkipCounts, read_timeout: float | None = None,
               offset: int = 0) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard: dicts {"__key__", "__url__", "__offset__", "__end__", ext: bytes, ...},
    extensions lower-case; "__offset__" is where the sample's first tar entry starts, "__end__" where
    the next sample's does (-1 for a shard's last). `offset` (one of those) starts the reading there: a
    seek in a local file, else the bytes before it read and discarded.
    A sample with an unreadable member carries "__unreadable__": True. With `read_timeout` (seconds),
    a shard whose bytes stop arriving that long is abandoned, counted as `timeout`, with one line on
    stderr; the samples before the stall are kept, except the last, possibly incomplete one."""
    try:
        stream = wds.gopen(url, "rb")
    except OSError:
        counts.add("missing_shard")
        return
    try:
        seeked = bool(offset) and _seek_plain(stream, offset)
    except OSError:  # a file that says it seeks and then fails to: read like a damaged one
        stream.close()
        counts.add("truncated_tar")
        return
    if read_timeout:
        stream = TimedStream(stream, read_timeout, name=url)
    entries = iter_entries(stream, start=offset, detect=False) if seeked else iter_entries(stream,
                                                                                          skip=offset)
    yield from _samples(url, stream, entries, counts)


def _samples(url: str, stream: Any, entries: Iterator, counts: SkipCounts,
             close: bool = True) -> Iterator[dict[str, Any]]:
    """The tar entries grouped into samples by key (iter_shard's), closing `stream` at the end."""
    sample: dict[str, Any] | None = None
    try:
        with stream if close else contextlib.nullcontext():
            for name, data, entry in entries:
                key, ext = base_plus_ext(name)
                if key is None or (key.startswith("__") and key.endswith("__")):
                    continue  # stray names without an extension, webdataset metadata
                ext = ext.lower()
                if sample is None or key != sample["__key__"]:
                    if sample is not None:
                        sample["__end__"] = entry
                        yield sample
                    sample = {"__key__": key, "__url__": url, "__offset__": entry, "__end__": -1}
                if data is None or ext in sample:
                    sample["__unreadable__"] = True
                    continue
                sample[ext] = data
        if sample is not None:
            yield sample
    except ShardStalled as stall:
        counts.add("timeout")
        print(f"warning: {stall}; shard abandoned (counted as 'timeout')", file=sys.stderr, flush=True)
    except (TarDamage, OSError) as damage:
        # The sample being read may be incomplete: it goes with the shard's count. When the break
        # is in the data of a member whose header starts the next sample, the one before is whole.
        counts.add("truncated_tar")
        member = getattr(damage, "member", None)
        if sample is not None and member is not None and base_plus_ext(member)[0] != sample["__key__"]:
            yield sample


def read_samples_at(url: str, spans: Iterable[tuple[int, int]],
                    read_timeout: float | None = None) -> dict[int, dict[str, Any]]:
    """offset -> raw sample, for the samples of one shard at `spans`, (iter_shard's "__offset__",
    "__end__") pairs: in a local uncompressed shard one seek and one sample's bytes each (no read
    timeout: a sample that cannot be read cannot be skipped either); a pipe or a compressed shard is
    read up to the last. Samples not found (the shard changed or broke) are left out."""
    spans = sorted(set(spans))
    found: dict[int, dict[str, Any]] = {}
    try:
        stream = wds.gopen(url, "rb")
    except OSError:
        return found
    try:
        seeks = _seek_plain(stream, spans[0][0]) if spans else False
    except OSError:
        seeks = False
    if not seeks:
        kill_command(stream)  # a pipe is read again below; this unread one would wait for its command
        stream.close()
        wanted, last = {offset for offset, _ in spans}, spans[-1][0] if spans else -1
        for raw in iter_shard(url, SkipCounts(), read_timeout):
            if raw["__offset__"] in wanted:
                found[raw["__offset__"]] = raw
            if raw["__offset__"] >= last:
                break
        return found
    with stream:
        for offset, end in spans:
            stream.seek(offset)
            entries = iter_entries(stream, start=offset, detect=False, end=end if end >= 0 else None)
            raw = next(_samples(url, stream, entries, SkipCounts(), close=False), None)
            if raw is not None and raw["__offset__"] == offset:
                found[offset] = raw
    return found


def load_rgb(data: bytes) -> Image.Image:
    """Decode image bytes fully (truncation raises) and convert any mode to RGB."""
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the direct P->RGB conversion warns about transparency
    if image.mode.startswith("I;16"):
        # 16-bit grayscale: keep the top 8 bits (a plain convert would clip everything above 255).
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    return image.convert("RGB")


class Undecoded(NamedTuple):
    """A sample that passed every check but the image decode: its image bytes, still encoded."""
    key: str
    data: bytes
    caption: str
    cls: int | None


def check_sample(raw: dict[str, Any], counts: SkipCounts, with_class: bool = False) -> Undecoded | None:
    """decode_sample's checks short of decoding the image: an Undecoded, or None after counting why
    it was skipped (for decoders that decode elsewhere, e.g. on the training device)."""
    if raw.get("__unreadable__"):
        counts.add("unreadable_member")
        return None
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in raw), None)
    if image_ext is None:
        counts.add("missing_image")
        return None
    if "txt" not in raw:
        counts.add("missing_caption")
        return None
    try:
        caption = raw["txt"].decode("utf-8").strip()
    except UnicodeDecodeError:
        counts.add("caption_not_utf8")
        return None
    if not caption:
        counts.add("empty_caption")
        return None
    cls = None
    if with_class:
        try:
            cls = int(raw["cls"].decode("ascii").strip())
        except (KeyError, ValueError, UnicodeDecodeError):
            counts.add("missing_class")
            return None
    return Undecoded(raw["__key__"], raw[image_ext], caption, cls)


def decode_sample(raw: dict[str, Any], counts: SkipCounts, with_class: bool = False) -> Sample | None:
    """A decoded Sample, or None after counting why it was skipped (cheap checks first)."""
    checked = check_sample(raw, counts, with_class)
    if checked is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF/ICC and similar warnings of odd but usable files
            image = load_rgb(checked.data)
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        counts.add("corrupt_image")
        return None
    return Sample(checked.key, image, checked.caption, checked.cls)


def iter_samples(urls: Iterable[str], counts: SkipCounts, with_class: bool = False) -> Iterator[Sample]:
    """Good samples of the shards, in order, counting the bad ones into `counts`."""
    for url in urls:
        for raw in iter_shard(url, counts):
            sample = decode_sample(raw, counts, with_class)
            if sample is not None:
                yield sample


# ---------------------------------------------------------------- evaluation pipeline


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the calling DataLoader worker; (0, 1) outside one."""
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def transform_images(transform: Callable, images: list[Image.Image]) -> torch.Tensor:
    """Stacked transformed images, computed with one torch thread as in a DataLoader worker: per-image
    ops are too small to gain from intra-op threads, and on busy cores (workers=0 next to other jobs)
    several threads contend and slow it down many times over."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        # default_collate stacks straight into shared memory inside a DataLoader worker, which saves
        # a copy of the whole batch when it is sent to the main process.
        return default_collate([transform(image) for image in images])
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class EvalDataset(IterableDataset):
    """Ordered, finite batches; yields (images, captions, classes, keys, worker, counts) tuples, and
    a last (None, ..., worker, counts) tuple per worker so that no count is lost."""

    def __init__(self, urls: list[str], transform: Callable | None, batch_size: int, with_class: bool,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.urls, self.transform, self.batch_size = urls, transform, batch_size
        self.with_class, self.rank, self.world_size = with_class, rank, world_size

    def _collate(self, batch: list[Sample]) -> tuple:
        images: Any = [s.image for s in batch]
        if self.transform is not None:
            images = transform_images(self.transform, images)
        classes = torch.tensor([s.cls for s in batch], dtype=torch.long) if self.with_class else None
        return images, [s.caption for s in batch], classes, [s.key for s in batch]

    def __iter__(self) -> Iterator[tuple]:
        worker, _ = worker_info()
        # Disjoint shards per node, then per worker (webdataset's split, by DataLoader worker id).
        urls = list(wds.split_by_worker(self.urls[self.rank::self.world_size]))
        counts = SkipCounts()
        batch: list[Sample] = []
        for sample in iter_samples(urls, counts, self.with_class):
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield (*self._collate(batch), worker, counts.as_dict())
                batch = []
        if batch:
            yield (*self._collate(batch), worker, counts.as_dict())
        yield None, None, None, None, worker, counts.as_dict()


def _no_collate(item: Any) -> Any:
    return item


def eval_dataset(spec: str | Sequence[str], transform: Callable | None, batch_size: int = 256,
                 with_class: bool = False, rank: int = 0, world_size: int = 1) -> EvalDataset:
    """The ordered finite dataset of a spec (see the module docstring); rank/world_size split the
    shards between nodes."""
    return EvalDataset(expand_shards(spec), transform, batch_size, with_class, rank, world_size)


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: ignore SIGTERM and SIGUSR1. SLURM signals every process of
    a job step, and the trainer, not its loaders (training or eval), decides when to stop
    (launch.faults); PyTorch's own SIGTERM handler in workers would end the worker, and with it the run,
    before the trainer could checkpoint. A worker still ends with its parent (PyTorch's workers watch it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class EvalLoader:
    """Iterable over (images, captions, classes, keys) batches; `.skipped()` gives counts by kind."""

    def __init__(self, dataset: EvalDataset, workers: int) -> None:
        self.dataset, self.workers = dataset, workers
        self._counts = WorkerCounts()

    def __iter__(self) -> Iterator[tuple]:
        self._counts = WorkerCounts()
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.workers, collate_fn=_no_collate,
                            generator=torch.Generator().manual_seed(0),  # leaves the global RNG alone
                            worker_init_fn=ignore_stop_signals if self.workers else None)
        for images, captions, classes, keys, worker, counts in loader:
            self._counts.update(worker, counts)
            if images is not None:
                yield images, captions, classes, keys

    def skipped(self) -> dict[str, int]:
        return self._counts.merged()


def eval_loader(spec: str | Sequence[str], transform: Callable | None, batch_size: int = 256,
                workers: int = 0, with_class: bool = False) -> EvalLoader:
    """Batches (images, captions, classes | None, keys) of a spec, in order, each sample once."""
    return EvalLoader(eval_dataset(spec, transform, batch_size, with_class), workers)
