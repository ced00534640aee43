"""Training data pipeline: WebDataset shards in the LAION / img2dataset layout, or the embedded toy set.

    loader = get_train_loader("shards/{00000..01023}.tar", image_size=224, batch_size=256,
                              num_samples=10_000_000, workers=8, seed=0, rank=rank, world_size=world)
    for step, (images, tokens) in enumerate(loader):   # endless; count steps, use batches_per_epoch
        ...
    loader.skipped()                                    # {kind: count} of bad samples skipped so far

`spec=None` trains on the toy set (generated on first use, see benchmarks.data.toy), through the same
code as a LAION run. Per (rank, DataLoader worker): webdataset's ResampledShards draws shards with
replacement from a seed made of (seed, rank, worker), so every node and worker reads its own stream;
samples go through a shuffle buffer (of undecoded bytes), are decoded by benchmarks.data.shards (bad ones
skipped and counted), transformed with towers.image_transform(image_size, train=True) and tokenised
with towers.tokenize, a batch at a time inside the worker. The worker stops the transform before its
last two steps (ToTensor, Normalize) and sends uint8 images, 4x fewer bytes between processes; the
main process finishes them (`float / 255`, then normalise: the same operations, bit for bit), or,
with `finish_images=False`, yields them as uint8 (pinned with `pin_memory`) and leaves
`loader.finish` to the trainer, which applies it on the GPU after the copy.

Exact resume: the batch stream depends only on (seed, rank, world_size, workers); batch i comes from
worker i % workers (the DataLoader's round-robin), and the random crop of each batch is seeded by its
position. `start_batch=k` gives exactly the batches an uninterrupted loader gives from batch k on: each
worker replays its stream up to k, reading and decoding but not transforming the skipped samples (so
a resume costs about the decode time of k batches, spread over the workers), and `skipped()` counts
the bad samples met during that replay too. The global torch RNG is never touched.

    python -m launch.data --bench [--data SPEC] [--workers N] [--json OUT]   # loader vs pure decode
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset
from torchvision.transforms import Compose, Normalize, PILToTensor, ToTensor

import towers
from benchmarks.data.shards import (
    EvalLoader,
    ShardSpecError,
    SkipCounts,
    WorkerCounts,
    decode_sample,
    eval_dataset,
    expand_shards,
    iter_shard,
    load_rgb,
    transform_images,
    worker_info,
)
from benchmarks.data.toy import ensure_toy

DEFAULT_SHUFFLE_BUFFER = 5000  # samples, undecoded; open_clip's LAION default
SHUFFLE_INITIAL = 1000  # samples read before the first one leaves the buffer
# A worker stops with an error instead of resampling forever when this many shards in a row give no
# sample (e.g. every shard missing), or this many samples in a row are bad (e.g. every image corrupt).
MAX_EMPTY_SHARDS = 100
MAX_BAD_SAMPLES = 100_000


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python runs."""
    return random.Random("/".join(map(str, parts))).getrandbits(63)


class Uint8Images:
    """A transform's last two steps, ToTensor then Normalize, applied to a uint8 batch in one go.

    `split(transform)` turns `Compose([..., ToTensor(), Normalize(mean, std)])` (open_clip's train and
    eval transforms) into (`Compose([..., PILToTensor()])`, Uint8Images): the first gives uint8 CHW
    tensors; this gives from their stack what the whole transform would have, exactly: ToTensor is
    `float / 255` and Normalize `(x - mean) / std`, elementwise, so a batch gets the same bits.
    """

    def __init__(self, normalize: Normalize) -> None:
        self.mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(255).sub_(self.mean).div_(self.std)

    def to(self, device: torch.device | str) -> Uint8Images:
        """The same finisher with its constants on `device` (copied once, not per batch)."""
        moved = Uint8Images.__new__(Uint8Images)
        moved.mean, moved.std = self.mean.to(device), self.std.to(device)
        return moved

    @staticmethod
    def split(transform: Callable) -> tuple[Callable, Uint8Images | None]:
        """(uint8 part, finisher); (transform, None) when it does not end in ToTensor, Normalize."""
        steps = list(getattr(transform, "transforms", []))
        if len(steps) >= 2 and isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize):
            return Compose(steps[:-2] + [PILToTensor()]), Uint8Images(steps[-1])
        return transform, None


class TrainStream(IterableDataset):
    """The per-worker stream: yields (images, tokens, worker role, cumulative skip counts)."""

    def __init__(self, urls: list[str], transform: Callable, *, batch_size: int, seed: int, rank: int,
                 start_batch: int, context_length: int, shuffle_buffer: int) -> None:
        super().__init__()
        self.urls, self.transform, self.batch_size = urls, transform, batch_size
        self.seed, self.rank, self.start_batch = seed, rank, start_batch
        self.context_length, self.shuffle_buffer = context_length, shuffle_buffer

    def _raw_samples(self, role: int, counts: SkipCounts) -> Iterator[dict]:
        shards = wds.ResampledShards(self.urls, seed=self.seed, worker_seed=lambda: _seed(self.rank, role),
                                     deterministic=True)
        empty_run = 0  # shards in a row that gave no sample at all
        for shard in shards:
            empty = True
            for raw in iter_shard(shard["url"], counts):
                empty = False
                yield raw
            empty_run = empty_run + 1 if empty else 0
            if empty_run >= MAX_EMPTY_SHARDS:
                raise RuntimeError(f"{empty_run} shards in a row gave no sample ({len(self.urls)} shards "
                                   f"from {self.urls[0]}); skipped: {counts.as_dict()}")

    def __iter__(self) -> Iterator[tuple]:
        worker, workers = worker_info()
        # Batch i of the loader is batch i // workers of worker i % workers. Resuming at batch k, the
        # DataLoader starts again at worker 0, so worker w plays the role of worker (w + k) % workers
        # and skips the batches that role had produced before k.
        role = (worker + self.start_batch) % workers
        skip = max(0, -(-(self.start_batch - role) // workers))
        counts = SkipCounts()
        raw = self._raw_samples(role, counts)
        shuffled = wds.shuffle(self.shuffle_buffer, min(SHUFFLE_INITIAL, self.shuffle_buffer),
                               rng=random.Random(_seed(self.seed, self.rank, role, 1)))(raw)
        batch = []
        index = 0  # this role's batch index
        bad_run = 0
        for item in shuffled:
            sample = decode_sample(item, counts)
            if sample is None:
                bad_run += 1
                if bad_run >= MAX_BAD_SAMPLES:
                    raise RuntimeError(f"{bad_run} bad samples in a row from {self.urls[0]} ... "
                                       f"({len(self.urls)} shards); skipped: {counts.as_dict()}")
                continue
            bad_run = 0
            batch.append(sample)
            if len(batch) < self.batch_size:
                continue
            if index >= skip:
                # Seed the random crops by batch position, so that skipping is exact; fork_rng keeps
                # the caller's RNG untouched when there are no worker processes.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_seed(self.seed, self.rank, role, 2, index))
                    images = transform_images(self.transform, [s.image for s in batch])
                tokens = towers.tokenize([s.caption for s in batch], self.context_length)
                yield images, tokens, role, counts.as_dict()
            index += 1
            batch = []


def _no_collate(item: tuple) -> tuple:
    return item


class TrainLoader:
    """Endless iterable over (images, tokens) batches. `batches_per_epoch` = num_samples //
    (batch_size * world_size); `skipped()` = bad samples by kind, merged over the workers."""

    def __init__(self, stream: TrainStream, *, workers: int, batches_per_epoch: int, num_shards: int,
                 finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 pin_memory: bool = False, finish_images: bool = True) -> None:
        self.stream, self.workers, self.pin_memory = stream, workers, pin_memory
        self.finish = finish  # the images' last transform steps (Uint8Images)
        self.finish_images = finish_images  # False: the consumer applies `finish` (on its device)
        self.batches_per_epoch, self.num_shards = batches_per_epoch, num_shards
        self.batch_size = stream.batch_size
        self._counts = WorkerCounts()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._counts = WorkerCounts()
        # Our own generator: the DataLoader draws its workers' base seed from it instead of from the
        # global RNG, which belongs to the trainer.
        finish_here = self.finish is not None and self.finish_images
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.workers, collate_fn=_no_collate,
                            generator=torch.Generator().manual_seed(self.stream.seed),
                            pin_memory=self.pin_memory and not finish_here)  # in its pinning thread
        for images, tokens, role, counts in loader:
            self._counts.update(role, counts)
            if finish_here:
                images = self.finish(images)
                # Pinned here, after finishing: the DataLoader would pin the uint8 batch, not the float one.
                images = images.pin_memory() if self.pin_memory else images
            yield images, tokens

    def skipped(self) -> dict[str, int]:
        return self._counts.merged()


def resolve_spec(spec: str | None, toy_seed: int = 0) -> str:
    """The shard spec itself, or the toy train split (generated on first use) for None."""
    return spec if spec else ensure_toy(seed=toy_seed).train


def get_train_loader(spec: str | None, *, image_size: int, batch_size: int, num_samples: int, workers: int,
                     seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                     context_length: int = 77,
                     shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, pin_memory: bool = False,
                     finish_images: bool = True) -> TrainLoader:
    """The training loader of this rank (see the module docstring). Raises ShardSpecError when no
    shard matches `spec`. `finish_images=False`: uint8 images, `loader.finish` left to the caller."""
    if batch_size < 1 or workers < 0 or start_batch < 0 or not 0 <= rank < world_size:
        raise ValueError("get_train_loader: need batch_size >= 1, workers >= 0, start_batch >= 0, "
                         "0 <= rank < world_size")
    urls = expand_shards(resolve_spec(spec))
    uint8_transform, finish = Uint8Images.split(towers.image_transform(image_size, train=True))
    stream = TrainStream(urls, uint8_transform, batch_size=batch_size,
                         seed=seed, rank=rank, start_batch=start_batch, context_length=context_length,
                         shuffle_buffer=max(1, shuffle_buffer))
    return TrainLoader(stream, workers=workers, batches_per_epoch=num_samples // (batch_size * world_size),
                       num_shards=len(urls), finish=finish, pin_memory=pin_memory,
                       finish_images=finish_images)


def get_eval_loader(spec: str | None, *, image_size: int, batch_size: int, workers: int = 0,
                    with_class: bool = False) -> EvalLoader:
    """Ordered, finite eval batches (images, captions, classes, keys) of `spec`, or of the toy val
    split (with classes) for None."""
    if not spec:
        spec, with_class = ensure_toy().val, True
    dataset = eval_dataset(spec, towers.image_transform(image_size, train=False), batch_size, with_class)
    return EvalLoader(dataset, workers)


# ---------------------------------------------------------------- bench


def _cpu_seconds() -> float:
    """CPU time of this process and its live children (DataLoader workers)."""
    import psutil  # an Accelerate dependency

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _pure_rates(urls: list[str], transform: Callable, n: int) -> dict[str, float]:
    """Per-stage costs on the first n good samples: tar reading, then decode+transform (samples/s and
    CPU us/sample) and tokenize from memory, without the loader around them."""
    counts = SkipCounts()
    raws = []
    start = time.perf_counter()
    for url in urls:
        for raw in iter_shard(url, counts):
            raws.append(raw)
        if len(raws) >= n:
            break
    tar_rate = len(raws) / (time.perf_counter() - start)
    samples = [s for s in (decode_sample(raw, counts) for raw in raws) if s is not None][:n]
    keys = {s.key for s in samples}
    images = [next(raw[e] for e in ("jpg", "jpeg", "png", "webp") if e in raw)
              for raw in raws if raw["__key__"] in keys]
    start, cpu = time.perf_counter(), time.process_time()
    for data in images:
        transform(load_rgb(data))
    decode_rate = len(images) / (time.perf_counter() - start)
    decode_cpu_us = (time.process_time() - cpu) / len(images) * 1e6
    captions = [s.caption for s in samples]
    start = time.perf_counter()
    for i in range(0, len(captions), 256):
        towers.tokenize(captions[i:i + 256])
    tokenize_rate = len(captions) / (time.perf_counter() - start)
    return {"n": len(images), "tar_read": tar_rate, "decode_transform": decode_rate,
            "decode_transform_cpu_us": decode_cpu_us, "tokenize": tokenize_rate}


def bench(spec: str | None, workers: int, image_size: int, batch_size: int, batches: int,
          shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> dict:
    """Loader samples/s (steady state) for 0..workers workers, and in the same run the pure
    decode+transform rate of the same images; ratios of the two, by wall time and by CPU time (the
    CPU-time ratio is the pipeline's own overhead, robust to other jobs on the machine)."""
    urls = expand_shards(resolve_spec(spec))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker: the comparison is per core
    try:
        pure = _pure_rates(urls, towers.image_transform(image_size, train=True), batches * batch_size)
    finally:
        torch.set_num_threads(threads)
    decode_rate, decode_cpu = pure["decode_transform"], pure["decode_transform_cpu_us"]
    print(f"pure decode+transform: {decode_rate:8.0f} samples/s  ({pure['n']} images from memory, "
          f"{image_size} px, 1 thread); CPU per sample: decode+transform {decode_cpu:.0f} us; alone: tar "
          f"read {1e6 / pure['tar_read']:.0f} us, tokenize {1e6 / pure['tokenize']:.0f} us")
    rows = []
    for w in range(workers + 1):
        loader = get_train_loader(spec, image_size=image_size, batch_size=batch_size, num_samples=10**9,
                                  workers=w, seed=0, shuffle_buffer=shuffle_buffer)
        it = iter(loader)
        # Warm-up: worker start, and each worker's shuffle buffer filled (until then it reads two
        # samples per sample it yields), so that the timed part is the steady state.
        for _ in range(max(1, w) * (2 + -(-shuffle_buffer // batch_size))):
            next(it)
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(batches):
            next(it)
        rate = batches * batch_size / (time.perf_counter() - start)
        cpu_us = (_cpu_seconds() - cpu) / (batches * batch_size) * 1e6
        del it
        row = {"workers": w, "samples_per_s": rate, "ratio": rate / decode_rate,
               "cpu_us_per_sample": cpu_us, "cpu_ratio": decode_cpu / cpu_us}
        rows.append(row)
        skipped = sum(loader.skipped().values())
        print(f"loader, {w} worker(s): {rate:8.0f} samples/s = {row['ratio']:.2f}x pure decode+transform; "
              f"CPU {cpu_us:.0f} us/sample = {row['cpu_ratio']:.2f}x; skipped: {skipped}")
    return {"image_size": image_size, "batch_size": batch_size, "pure": pure, "loader": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launch.data", description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help="measure loader throughput (the only mode)")
    parser.add_argument("--data", default=None, help="shard spec (brace pattern, '::' list or folder); "
                        "default: the toy train split")
    parser.add_argument("--workers", type=int, default=2, help="measure 0..N DataLoader workers (default 2)")
    parser.add_argument("--image-size", type=int, default=64, help="transform output size (default 64)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting (default 20)")
    parser.add_argument("--shuffle-buffer", type=int, default=DEFAULT_SHUFFLE_BUFFER,
                        help=f"shuffle buffer in samples (default {DEFAULT_SHUFFLE_BUFFER})")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if not args.bench:
        parser.error("nothing to do: pass --bench")
    if min(args.workers + 1, args.batch_size, args.batches, args.image_size, args.shuffle_buffer) < 1:
        parser.error("--workers must be >= 0; --batch-size, --batches, --image-size, --shuffle-buffer >= 1")
    try:
        result = bench(args.data, args.workers, args.image_size, args.batch_size, args.batches,
                       args.shuffle_buffer)
    except ShardSpecError as exc:
        print(f"error: --data: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
