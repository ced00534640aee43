"""The per-worker training stream, whose whole position is a small state dict (exact resume in O(1)).

One stream per (seed, rank, role): it draws shards with replacement, reads their samples into a
shuffle buffer of undecoded bytes, picks samples out of the buffer at random, decodes them (bad ones
skipped and counted), and yields batches of uint8 images and tokens. Every random choice is a pure
function of a counter, never of an RNG's history:

- shard n of the stream is `urls[draw(seed, rank, role, "shard", n)]`;
- the picks while batch b is assembled come from an RNG seeded by (seed, rank, role, "pick", b);
- the random crops of batch b are seeded by (seed, rank, role, "crop", b); with a `decoder`
  (launch.decoders) each crop box is drawn from that RNG just before its sample's decode, in the
  same order and so the same boxes as the default path's transform draws after the batch is whole.

So the position after any batch is `state()`: the shards drawn so far, the current shard, the next
member's ordinal in it and the byte offset of the last sample read from it, the buffer as (url index,
member ordinal, byte offset, end offset) references in buffer order, the batch counter, the skip
counts. `restore(state)` reads back the referenced samples by their offsets (one seek and one
sample's bytes each in a local shard: O(buffer) bytes, not the shards' prefixes; a `pipe:` shard can
only be read up to them) and reopens the current shard at its offset, and the stream then continues
bit for bit as it would have. States without offsets (older checkpoints) re-read the prefixes.

    stream = TrainStream(urls, transform, batch_size=256, seed=0, rank=0, context_length=77,
                         shuffle_buffer=5000)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate

import towers
from benchmarks.data.shards import (
    SkipCounts,
    check_sample,
    decode_sample,
    iter_shard,
    read_samples_at,
    transform_images,
    worker_info,
)
from launch.decoders import WorkerDecoder, one_thread, pack_device_batch

SHUFFLE_INITIAL = 1000  # samples read before the first one leaves the buffer
# A worker stops with an error instead of resampling forever when this many shards in a row give no
# sample (e.g. every shard missing), or this many samples in a row are bad (e.g. every image corrupt).
MAX_EMPTY_SHARDS = 100
MAX_BAD_SAMPLES = 100_000
NO_SHARD = -1
REF_FIELDS = 4  # a buffer reference: url index, member ordinal, byte offset, end offset (-1: unknown)


def draw(*parts: int | str) -> int:
    """A 63-bit number from the parts, stable across processes and Python runs."""
    return random.Random("/".join(map(str, parts))).getrandbits(63)


class _Position:
    """Where one stream is: the reader (shards drawn, current shard and member) and the buffer."""

    def __init__(self, buffer_size: int) -> None:
        self.shards_drawn, self.shard, self.member, self.empty_run = 0, NO_SHARD, 0, 0
        self.offset = -1  # byte offset of the last sample read from the current shard
        self.members: Iterator[dict] | None = None  # the current shard's reader
        self.raws: list[dict] = []
        # (url index, member ordinal, byte offset, end offset) per raw
        self.refs = np.zeros((buffer_size, REF_FIELDS), dtype=np.int64)
        self.picks, self.batches, self.bad_run = 0, 0, 0
        self.counts = SkipCounts()


class TrainStream(IterableDataset):
    """Yields (uint8 images, tokens, role, state after this batch); see the module docstring. With a
    `decoder` (launch.decoders, any but `pil`) the images are that decoder's: a uint8 batch, or for
    `device` the packed encoded batch (`pack_device_batch`) that the training process decodes.

    `start_batch` and `states` resume it: batch i of the loader comes from role i % workers (the
    DataLoader's round-robin), and resuming after `start_batch` batches worker w plays role
    (w + start_batch) % workers from `states[role]` (None: that role had not yielded yet)."""

    def __init__(self, urls: list[str], transform: Callable, *, batch_size: int, seed: int, rank: int,
                 context_length: int, shuffle_buffer: int, start_batch: int = 0,
                 states: list[dict | None] | None = None, decoder: WorkerDecoder | None = None,
                 read_timeout: float | None = None) -> None:
        super().__init__()
        self.read_timeout = read_timeout  # seconds without bytes before a shard is abandoned
        self.urls, self.transform, self.batch_size, self.decoder = urls, transform, batch_size, decoder
        self.seed, self.rank, self.context_length = seed, rank, context_length
        self.shuffle_buffer, self.start_batch, self.states = shuffle_buffer, start_batch, states

    # --- reading ----------------------------------------------------------------------------------
    def _open(self, url_index: int, skip: int, counts: SkipCounts, offset: int = 0) -> Iterator[dict]:
        """The shard's samples from the one at `offset`, then past `skip` of them."""
        members = iter_shard(self.urls[url_index], counts, self.read_timeout, offset)
        for _ in range(skip):
            next(members, None)
        return members

    def _next_raw(self, role: int, at: _Position) -> tuple[dict, int, int]:
        while True:
            if at.members is None:
                at.shard = draw(self.seed, self.rank, role, "shard", at.shards_drawn) % len(self.urls)
                at.shards_drawn, at.member = at.shards_drawn + 1, 0
                at.members = self._open(at.shard, 0, at.counts)
            raw = next(at.members, None)
            if raw is not None:
                at.member, at.offset = at.member + 1, raw["__offset__"]
                at.empty_run = 0
                return raw, at.shard, at.member - 1
            at.empty_run = at.empty_run + 1 if at.member == 0 else 0
            at.members, at.shard = None, NO_SHARD
            if at.empty_run >= MAX_EMPTY_SHARDS:
                raise RuntimeError(f"{at.empty_run} shards in a row gave no sample ({len(self.urls)} shards "
                                   f"from {self.urls[0]}); skipped: {at.counts.as_dict()}")

    def _fill(self, role: int, at: _Position) -> None:
        # Like webdataset's shuffle: the first sample leaves after SHUFFLE_INITIAL are read, then
        # two are read per sample taken until the buffer is full.
        target = min(self.shuffle_buffer, SHUFFLE_INITIAL + at.picks)
        while len(at.raws) < target:
            raw, url_index, member = self._next_raw(role, at)
            at.refs[len(at.raws)] = (url_index, member, raw["__offset__"], raw["__end__"])
            at.raws.append(raw)

    def _pick(self, rng: random.Random, at: _Position) -> dict:
        i, last = rng.randrange(len(at.raws)), len(at.raws) - 1
        at.raws[i], at.raws[last] = at.raws[last], at.raws[i]
        at.refs[[i, last]] = at.refs[[last, i]]
        at.picks += 1
        return at.raws.pop()

    # --- state ------------------------------------------------------------------------------------
    def state(self, at: _Position) -> dict:
        return {"shards_drawn": at.shards_drawn, "shard": at.shard, "member": at.member, "offset": at.offset,
                "empty_run": at.empty_run, "buffer": torch.from_numpy(at.refs[:len(at.raws)].copy()),
                "picks": at.picks, "batches": at.batches, "bad_run": at.bad_run,
                "counts": at.counts.as_dict()}

    def restore(self, state: dict, at: _Position) -> None:
        """Put `at` where `state` says: read the buffer's samples back and reopen the current shard."""
        for key in ("shards_drawn", "shard", "member", "empty_run", "picks", "batches", "bad_run"):
            setattr(at, key, int(state[key]))
        at.counts = SkipCounts({k: int(v) for k, v in state["counts"].items()})
        refs = state["buffer"].numpy()
        raws = self._read_by_offset(refs) if refs.shape[1] == REF_FIELDS else self._read_by_ordinal(refs)
        missing = [tuple(refs[i][:2]) for i, raw in enumerate(raws) if raw is None]
        if missing:
            url_index, member = missing[0]
            raise RuntimeError(f"resume: {self.urls[url_index]} no longer holds member {member} that the "
                               f"checkpoint's shuffle buffer refers to ({len(missing)} such members)")
        at.raws = raws
        if refs.shape[1] == REF_FIELDS:
            at.refs[:len(refs)] = refs
        else:  # an older state: its samples' offsets are what the reader gave them
            at.refs[:len(refs)] = [(*ref, raw["__offset__"], raw["__end__"])
                                   for ref, raw in zip(refs, raws, strict=True)]
        # Skipping the reopened shard's first members counts nothing: the reader counts only a missing
        # shard (it was there) and damage, which lies after every member already read.
        at.offset = int(state.get("offset", -1))
        if at.shard == NO_SHARD:
            at.members = None
        elif at.offset >= 0:  # from the last sample read (skipped), where the next one starts
            at.members = self._open(at.shard, 1, at.counts, at.offset)
        else:
            at.members = self._open(at.shard, at.member, at.counts)

    def _read_by_offset(self, refs: np.ndarray) -> list[dict | None]:
        """The samples of the buffer's references, read by their byte offsets."""
        wanted: dict[int, dict[tuple[int, int], list[int]]] = {}  # url index -> {(offset, end): slots}
        for slot, (url_index, _, offset, end) in enumerate(refs.tolist()):
            wanted.setdefault(url_index, {}).setdefault((offset, end), []).append(slot)
        raws: list[dict | None] = [None] * len(refs)
        for url_index, spans in wanted.items():
            found = read_samples_at(self.urls[url_index], spans, self.read_timeout)
            for (offset, _), slots in spans.items():
                for slot in slots:
                    raws[slot] = found.get(offset)
        return raws

    def _read_by_ordinal(self, refs: np.ndarray) -> list[dict | None]:
        """An older state's references (url index, member ordinal): each shard read up to the last."""
        wanted: dict[int, dict[int, list[int]]] = {}
        for slot, (url_index, member) in enumerate(refs.tolist()):
            wanted.setdefault(url_index, {}).setdefault(member, []).append(slot)
        raws: list[dict | None] = [None] * len(refs)
        for url_index, members in wanted.items():
            last = max(members)
            for ordinal, raw in enumerate(iter_shard(self.urls[url_index], SkipCounts(), self.read_timeout)):
                for slot in members.get(ordinal, ()):
                    raws[slot] = raw
                if ordinal >= last:
                    break
        return raws

    # --- batches ----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple]:
        worker, workers = worker_info()
        role = (worker + self.start_batch) % workers
        at = _Position(self.shuffle_buffer)
        if self.states is not None and self.states[role] is not None:
            self.restore(self.states[role], at)
        while True:
            rng = random.Random(draw(self.seed, self.rank, role, "pick", at.batches))
            # fork_rng keeps the caller's RNG untouched when there are no worker processes.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(draw(self.seed, self.rank, role, "crop", at.batches))
                if self.decoder is None:
                    batch = self._assemble(role, rng, at, lambda raw: decode_sample(raw, at.counts))
                    images = transform_images(self.transform, [s.image for s in batch])
                else:  # the crop boxes are drawn sample by sample, before each decode (launch.decoders)
                    with one_thread():
                        batch = self._assemble(role, rng, at, lambda raw: self._decode_with(raw, at.counts))
                    images = self._images([s[1] for s in batch])
            tokens = towers.tokenize([s[2] for s in batch], self.context_length)  # Sample or tuple: caption
            at.batches += 1
            yield images, tokens, role, self.state(at)

    def _assemble(self, role: int, rng: random.Random, at: _Position, decode: Callable) -> list:
        batch = []
        while len(batch) < self.batch_size:
            self._fill(role, at)
            sample = decode(self._pick(rng, at))
            if sample is None:
                at.bad_run += 1
                if at.bad_run >= MAX_BAD_SAMPLES:
                    raise RuntimeError(f"{at.bad_run} bad samples in a row from {self.urls[0]} ... "
                                       f"({len(self.urls)} shards); skipped: {at.counts.as_dict()}")
                continue
            at.bad_run = 0
            batch.append(sample)
        return batch

    def _decode_with(self, raw: dict, counts: SkipCounts) -> tuple | None:
        """(key, (output, box), caption) through the decoder, or None (counted as decode_sample does)."""
        checked = check_sample(raw, counts)
        if checked is None:
            return None
        decoded = self.decoder(checked.data)
        if decoded is None:
            counts.add("corrupt_image")
            return None
        return checked.key, decoded, checked.caption

    def _images(self, decoded: list[tuple]) -> torch.Tensor | dict:
        outputs, boxes = [o for o, _ in decoded], [b for _, b in decoded]
        if self.decoder.kind == "device":
            return pack_device_batch(outputs, boxes)
        return default_collate(outputs)  # into shared memory inside a worker, as transform_images
