"""The training loader's speed: samples/s of `launch.data.get_train_loader` for 0..N DataLoader workers
against the pure decode + transform rate of the same images, by wall time and by CPU time.

    python -m benchmarks.performance.loader_bench [--data SPEC] [--workers N] [--json OUT]
    python -m benchmarks.performance.loader_bench --decoder device --decode-device cuda   # GPU decoding

The CPU-time ratio is the pipeline's own overhead, robust to other jobs on the machine; the pure rate
is one thread (as in a DataLoader worker) on the first good samples read into memory. Without --data it
reads the toy train split.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import psutil  # an Accelerate dependency
import torch

import towers
from benchmarks.data.shards import (
    ShardSpecError,
    SkipCounts,
    decode_sample,
    expand_shards,
    iter_shard,
    load_rgb,
)
from benchmarks.provenance import write_json
from launch.data import DEFAULT_SHUFFLE_BUFFER, get_train_loader, resolve_spec
from launch.decoders import DECODERS, DEFAULT_DECODER
from runfolder.errors import OneLineParser, run_main


def _cpu_seconds() -> float:
    """CPU time of this process and its live children (DataLoader workers)."""
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
    parser = OneLineParser(prog="python -m benchmarks.performance.loader_bench",
                           description=__doc__.split("\n")[0])
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
