"""Training data pipeline: WebDataset shards in the LAION / img2dataset layout, or the embedded toy set.

    loader = get_train_loader("shards/{00000..01023}.tar", image_size=224, batch_size=256,
                              workers=8, seed=0, rank=rank, world_size=world)
    for step, (images, tokens) in enumerate(loader):   # endless (shards resampled): count steps
        ...
    loader.skipped()                                    # {kind: count} of bad samples skipped so far

`spec=None` trains on the toy set of `toy_seed` and `toy_task` (generated on first use, see
benchmarks.data.toy), through the same code as a LAION run. Each (rank, DataLoader worker) reads its
own stream (`launch.train_stream`):
shards drawn with replacement, a shuffle buffer of undecoded bytes, decoding by benchmarks.data.shards
(bad samples skipped and counted), towers.image_transform(image_size, train=True) and towers.tokenize,
a batch at a time inside the worker (`decoder`: the JPEG decode path, launch.decoders; `device`
leaves the decode and crop to this process, on `decode_device`). The worker stops the transform
before its last two steps (ToTensor, Normalize) and sends uint8 images, 4x fewer bytes between
processes; the main process
finishes them (`float / 255`, then normalise: the same operations, bit for bit), or, with
`finish_images=False`, yields them as uint8 (pinned with `pin_memory`) and leaves `loader.finish` to
the trainer, which applies it on the GPU after the copy.

Exact resume in O(1): `loader.state_dict()` is the position after the last batch handed out (per
worker stream: shards drawn, current shard, member and byte offset, the shuffle buffer as member
references with byte offsets, the batch counter, the skip counts); `get_train_loader(..., state=that)`
gives exactly the batches the first loader would have given next, after reading back only the
buffer's samples (by offset: O(buffer) bytes) and reopening the current shards at theirs.
The global torch RNG is never touched.

    python -m launch.data --bench [--data SPEC] [--workers N] [--json OUT]   # loader vs pure decode
    python -m launch.data --bench --decoder device --decode-device cuda      # decoding on the GPU
    python -m launch.decode_bench        # per-core rates of every decoder path (docs/gpu_path.md)
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import Compose, Normalize, PILToTensor, ToTensor

import towers
from benchmarks.data.shards import (
    ShardSpecError,
    SkipCounts,
    WorkerCounts,
    decode_sample,
    expand_shards,
    ignore_stop_signals,
    iter_shard,
    load_rgb,
)
from benchmarks.data.toy import VERSION as TOY_VERSION
from benchmarks.data.toy import ensure_toy
from benchmarks.provenance import write_json
from launch.decoders import DECODERS, DEFAULT_DECODER, DeviceDecoder, WorkerDecoder
from launch.train_stream import TrainStream
from runfolder.errors import OneLineParser, run_main

DEFAULT_SHUFFLE_BUFFER = 5000  # samples, undecoded; open_clip's LAION default


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


def _no_collate(item: tuple) -> tuple:
    return item


def dead_worker_error(workers: list, wait_s: float = 5.0) -> RuntimeError | None:
    """torch's own error for a DataLoader worker that died, or None if none has within `wait_s`.

    torch raises it only when it already sees the worker dead; a worker killed while its batch is in
    flight surfaces first as the connection error of receiving that batch's shared memory, a moment
    before the death shows. Said as torch says it, so `launch.faults.failure_line` names the worker."""
    if not workers:  # no worker processes (--workers 0): the error is not a worker's
        return None
    deadline = time.monotonic() + wait_s
    while True:
        dead = next((worker for worker in workers if not worker.is_alive()), None)
        if dead is not None:
            if dead.exitcode is not None and dead.exitcode < 0:
                return RuntimeError(f"DataLoader worker (pid {dead.pid}) is killed by signal: "
                                    f"{signal.strsignal(-dead.exitcode)}. ")
            return RuntimeError(f"DataLoader worker (pid(s) {dead.pid}) exited unexpectedly")
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


class TrainLoader:
    """Endless iterable over (images, tokens) batches. `skipped()` = bad samples by kind, merged over
    the workers; `state_dict()` = the position after the last batch handed out (give it to
    `get_train_loader`'s `state` to continue exactly there)."""

    def __init__(self, stream: TrainStream, *, workers: int, num_shards: int,
                 finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 pin_memory: bool = False, finish_images: bool = True,
                 device_decoder: DeviceDecoder | None = None, device_state: dict | None = None) -> None:
        self.stream, self.workers, self.pin_memory = stream, workers, pin_memory
        self.device_decoder = device_decoder  # decoder `device`: the workers' batches are encoded
        self.device_state = device_state  # its part of a resumed position (see _decode_on_device)
        self.finish = finish  # the images' last transform steps (Uint8Images)
        self.finish_images = finish_images  # False: the consumer applies `finish` (on its device)
        self.num_shards = num_shards
        self.batch_size = stream.batch_size
        self.worker_pids: list[int] = []
        self._start()

    def _start(self) -> None:
        """The position the stream starts from (a fresh one, or the resumed state)."""
        self._counts, self._batches = WorkerCounts(), self.stream.start_batch
        self._roles: list[dict | None] = list(self.stream.states or [None] * max(1, self.workers))
        for role, state in enumerate(self._roles):
            if state is not None:
                self._counts.update(role, state["counts"])
        # Decoder `device`: samples decoded but not yet handed out (after a bad JPEG shortened a batch),
        # and the bad JPEGs found here; both are part of the position.
        device = self.device_state or {}
        self._pending = [device.get("images", torch.empty(0, dtype=torch.uint8)),
                         device.get("tokens", torch.empty(0, dtype=torch.long))]
        self._device_bad = int(device.get("corrupt_image", 0))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._start()
        # Our own generator: the DataLoader draws its workers' base seed from it instead of from the
        # global RNG, which belongs to the trainer.
        finish_here = self.finish is not None and self.finish_images
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.workers, collate_fn=_no_collate,
                            generator=torch.Generator().manual_seed(self.stream.seed),
                            worker_init_fn=ignore_stop_signals if self.workers else None,
                            pin_memory=self.pin_memory and not finish_here)  # in its pinning thread
        batches = iter(loader)
        # worker index -> pid, to name a worker the OOM killer ends (launch.faults.failure_line)
        self.worker_pids = [worker.pid for worker in getattr(batches, "_workers", [])]
        try:
            yield from self._batches_of(batches, finish_here)
        except (ConnectionError, EOFError) as error:
            dead = dead_worker_error(getattr(batches, "_workers", []))
            if dead is None:
                raise
            raise dead from error

    def _batches_of(self, batches: Iterator, finish_here: bool) -> Iterator[tuple[torch.Tensor, ...]]:
        for images, tokens, role, state in batches:
            self._roles[role], self._batches = state, self._batches + 1
            self._counts.update(role, state["counts"])
            if self.device_decoder is not None:
                yield from self._decode_on_device(images, tokens, finish_here)
                continue
            if finish_here:
                images = self.finish(images)
                # Pinned here, after finishing: the DataLoader would pin the uint8 batch, not the float one.
                images = images.pin_memory() if self.pin_memory else images
            yield images, tokens

    def _decode_on_device(self, batch: dict, tokens: torch.Tensor, finish_here: bool) -> Iterator[tuple]:
        """Decode a worker's encoded batch on the device; bad JPEGs are dropped and counted, and the
        batch is made whole from the next one (kept whole: the contrastive loss gathers equal batches)."""
        images, bad = self.device_decoder(batch)
        if bad:
            self._device_bad += len(bad)
            keep = torch.ones(len(tokens), dtype=torch.bool)
            keep[bad] = False
            tokens = tokens[keep]
        pending_images, pending_tokens = self._pending
        if len(pending_images):
            images = torch.cat([pending_images.to(images.device), images])
            tokens = torch.cat([pending_tokens, tokens])
        while len(images) >= self.batch_size:
            out_images, out_tokens = images[:self.batch_size], tokens[:self.batch_size]
            images, tokens = images[self.batch_size:], tokens[self.batch_size:]
            self._pending = [images, tokens]
            yield (self.finish.to(out_images.device)(out_images) if finish_here else out_images), out_tokens
        self._pending = [images, tokens]

    def skipped(self) -> dict[str, int]:
        merged = self._counts.merged()
        merged["corrupt_image"] += self._device_bad
        return merged

    def state_dict(self) -> dict:
        state = {"batches": self._batches, "workers": self.workers, "num_shards": self.num_shards,
                 "roles": list(self._roles)}
        if self.device_decoder is not None:
            state["device"] = {"images": self._pending[0].cpu(), "tokens": self._pending[1].cpu(),
                               "corrupt_image": self._device_bad}
        return state


def resolve_spec(spec: str | None, toy_seed: int = 0, toy_task: str = "standard") -> str:
    """The shard spec itself, or for None the train split of the toy set of `toy_seed` and `toy_task`
    (generated on first use)."""
    return spec if spec else toy_split("train", toy_seed, toy_task)


def toy_split(split: str, toy_seed: int = 0, toy_task: str = "standard") -> str:
    """The shard pattern of `split` (train or val) of the toy set of `toy_seed` and `toy_task`, generated on
    first use: a run trains on one and scores the other, of the same set."""
    return getattr(ensure_toy(seed=toy_seed, task=toy_task), split)


def data_identity(spec: str | None) -> dict:
    """What the training data is, independent of where it is mounted: the toy set's seed and
    version (Recipe.identity puts the recipe's toy_seed and toy_task in), or the shards' file names (in
    order) and count."""
    if not spec:
        return {"toy_seed": 0, "toy_version": TOY_VERSION}
    names = [url.rstrip("/").rsplit("/", 1)[-1] for url in expand_shards(spec)]
    return {"shards": len(names), "shard_names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def get_train_loader(spec: str | None, *, image_size: int, batch_size: int, workers: int, seed: int,
                     rank: int = 0, world_size: int = 1, state: dict | None = None, context_length: int = 77,
                     shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, pin_memory: bool = False,
                     finish_images: bool = True, decoder: str = DEFAULT_DECODER,
                     decode_device: torch.device | str = "cpu", shard_read_timeout: float | None = None,
                     toy_seed: int = 0, toy_task: str = "standard") -> TrainLoader:
    """The training loader of this rank (see the module docstring); `state` (a `TrainLoader.state_dict()`)
    continues where that loader was. Raises ShardSpecError when no shard matches `spec`.
    `finish_images=False`: uint8 images, `loader.finish` left to the caller. `decoder`: one of
    launch.decoders.DECODERS; `device` decodes in this process on `decode_device`. `shard_read_timeout`:
    seconds without bytes before a shard is abandoned (counted as `timeout`; None waits forever).
    `toy_seed`, `toy_task`: the toy set read when `spec` is None."""
    if decoder not in DECODERS:
        raise ValueError(f"get_train_loader: decoder {decoder!r} is not one of {DECODERS}")
    if batch_size < 1 or workers < 0 or not 0 <= rank < world_size:
        raise ValueError("get_train_loader: need batch_size >= 1, workers >= 0, 0 <= rank < world_size")
    urls = expand_shards(resolve_spec(spec, toy_seed, toy_task))
    if state is not None and (state["workers"], state["num_shards"]) != (workers, len(urls)):
        raise ValueError(f"loader state of {state['workers']} workers over {state['num_shards']} shards "
                         f"given to a loader of {workers} workers over {len(urls)} shards")
    train_transform = towers.image_transform(image_size, train=True)
    uint8_transform, finish = Uint8Images.split(train_transform)
    stream = TrainStream(urls, uint8_transform, batch_size=batch_size, seed=seed, rank=rank,
                         context_length=context_length, shuffle_buffer=max(1, shuffle_buffer),
                         start_batch=state["batches"] if state else 0,
                         states=state["roles"] if state else None,
                         decoder=None if decoder == "pil" else WorkerDecoder(decoder, train_transform),
                         read_timeout=shard_read_timeout)
    device_decoder = DeviceDecoder(image_size, decode_device) if decoder == "device" else None
    return TrainLoader(stream, workers=workers, num_shards=len(urls), finish=finish, pin_memory=pin_memory,
                       finish_images=finish_images, device_decoder=device_decoder,
                       device_state=state.get("device") if state else None)


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
          shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, decoder: str = DEFAULT_DECODER,
          decode_device: str = "cpu") -> dict:
    """Loader samples/s (steady state) for 0..workers workers, and in the same run the pure
    decode+transform rate of the same images; ratios of the two, by wall time and by CPU time (the
    CPU-time ratio is the pipeline's own overhead, robust to other jobs on the machine). The loader
    uses `decoder` (`device`: decoded on `decode_device`); the pure rate is always today's pil path."""
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
        loader = get_train_loader(spec, image_size=image_size, batch_size=batch_size, workers=w, seed=0,
                                  shuffle_buffer=shuffle_buffer, decoder=decoder, decode_device=decode_device)
        it = iter(loader)
        # Warm-up: worker start, and each worker's shuffle buffer filled (until then it reads two
        # samples per sample it yields), so that the timed part is the steady state.
        for _ in range(max(1, w) * (2 + -(-shuffle_buffer // batch_size))):
            next(it)
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(batches):
            images, _ = next(it)
        if images.is_cuda:
            torch.cuda.synchronize(images.device)  # device decoding runs asynchronously
        rate = batches * batch_size / (time.perf_counter() - start)
        cpu_us = (_cpu_seconds() - cpu) / (batches * batch_size) * 1e6
        del it
        # A few tiny batches can take less CPU time than the clock's resolution: no ratio then.
        row = {"workers": w, "samples_per_s": rate, "ratio": rate / decode_rate,
               "cpu_us_per_sample": cpu_us, "cpu_ratio": decode_cpu / cpu_us if cpu_us > 0 else float("nan")}
        rows.append(row)
        skipped = sum(loader.skipped().values())
        print(f"loader, {w} worker(s): {rate:8.0f} samples/s = {row['ratio']:.2f}x pure decode+transform; "
              f"CPU {cpu_us:.0f} us/sample = {row['cpu_ratio']:.2f}x; skipped: {skipped}")
    return {"image_size": image_size, "batch_size": batch_size, "decoder": decoder,
            "decode_device": decode_device, "pure": pure, "loader": rows}


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m launch.data", description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help="measure loader throughput (the only mode)")
    parser.add_argument("--data", default=None, help="shard spec (brace pattern, '::' list or folder); "
                        "default: the toy train split")
    parser.add_argument("--workers", type=int, default=2, help="measure 0..N DataLoader workers (default 2)")
    parser.add_argument("--image-size", type=int, default=64, help="transform output size (default 64)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per setting (default 20)")
    parser.add_argument("--shuffle-buffer", type=int, default=DEFAULT_SHUFFLE_BUFFER,
                        help=f"shuffle buffer in samples (default {DEFAULT_SHUFFLE_BUFFER})")
    parser.add_argument("--decoder", default=DEFAULT_DECODER, choices=DECODERS,
                        help=f"the loader's decoder (launch/decoders.py; default {DEFAULT_DECODER})")
    parser.add_argument("--decode-device", default="cpu", help="where --decoder device decodes (default cpu)")
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if not args.bench:
        parser.error("nothing to do: pass --bench")
    if min(args.workers + 1, args.batch_size, args.batches, args.image_size, args.shuffle_buffer) < 1:
        parser.error("--workers must be >= 0; --batch-size, --batches, --image-size, --shuffle-buffer >= 1")
    if args.decode_device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --decode-device {args.decode_device}: no CUDA device here", file=sys.stderr)
        raise SystemExit(2)
    try:
        result = bench(args.data, args.workers, args.image_size, args.batch_size, args.batches,
                       args.shuffle_buffer, args.decoder, args.decode_device)
    except ShardSpecError as exc:
        print(f"error: --data: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    run_main(main)
