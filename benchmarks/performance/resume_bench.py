"""Resume benchmark: the time from launch to the first trained step when resuming at step k, for two k;
and (`--restore`) the bytes and time one worker stream's restore reads at a B/32-like position.

    python -m benchmarks.performance.resume_bench  # resume at steps 10 and 3,000 (toy, batch 32)
    python -m benchmarks.performance.resume_bench --repo /tmp/old-tree  # another checkout's train.py
    python -m benchmarks.performance.resume_bench --restore  # restore bytes/time: by offset vs re-reading

`--restore` writes LAION-like shards (10,000 samples of 256-px JPEGs of ~30 KB each, with caption
and json), moves one worker stream (batch 256, shuffle buffer 5,000) `--restore-batches` batches in
(reading and picking as training does, without decoding), takes its state and restores it twice in
this process: from the byte offsets the state holds, and from member ordinals only (as states
before the offsets were restored: each shard re-read up to its last buffered sample). Bytes are
counted below the buffered reader (what a filesystem serves); times are with the shards in the page
cache, so on a shared filesystem the bytes are what matter.

It trains the tiny Mixer (`--steps 3010`, batch 32, toy set) until its step-10 checkpoint exists, then
writes a step-3,000 checkpoint of the same run: the same weights and optimizer state with step 3,000
and, where the checkpoint format holds the data position (`data`), the loader state after 3,000
batches, computed here by iterating the loader. Each resume is a fresh `train.py --resume latest`
process; the time runs from its start until `metrics.jsonl` holds step k + 1. Exact resume in O(1)
means the two times are about equal (the ratio printed last); a loader that replays the data to
reach its position takes time in proportion to k.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import psutil  # an Accelerate dependency
import torch

from benchmarks.data.files import REPO_ROOT
from runfolder import RunFolder, point_latest
from runfolder.errors import OneLineParser, run_main

STEPS = 3010  # the recipe's length: both resume points lie inside it


def _flags(batch_size: int, workers: int, runs: Path, name: str) -> list[str]:
    """Flags both this tree's and older train.py versions understand."""
    return ["--tower", "mixer", "--batch-size", str(batch_size), "--steps", str(STEPS),
            "--workers", str(workers), "--log-every", "1", "--save-every", "10", "--runs-dir", str(runs),
            "--name", name]


def _kill_tree(process: subprocess.Popen) -> None:
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def _start(repo: Path, flags: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(repo / "launch" / "train.py"), *flags], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(process: subprocess.Popen, ready, what: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            raise SystemExit(f"error: train.py ended before {what}: {process.stderr.read()[-1500:]}")
        if time.time() > deadline:
            _kill_tree(process)
            raise SystemExit(f"error: no {what} within {timeout:.0f} s")
        time.sleep(0.02)


def _logged(run: Path, step: int) -> bool:
    metrics = RunFolder(run).metrics
    if not metrics.is_file():
        return False
    lines = metrics.read_text().splitlines()
    if lines and not lines[-1].endswith("}"):
        lines = lines[:-1]  # being written
    return any(record.get("step") == step and "loss" in record for record in map(json.loads, lines))


def _state_after(batches: int, checkpoint: dict, batch_size: int, workers: int) -> list[dict]:
    """The data position after `batches` batches, for every rank of the checkpoint (one here)."""
    from launch.data import get_train_loader

    recipe = checkpoint["experiment"]["recipe"]
    loader = get_train_loader(recipe["train_data"], image_size=64, batch_size=batch_size,
                              workers=workers, seed=recipe["seed"], context_length=recipe["context_length"],
                              toy_seed=recipe.get("toy_seed", 0), toy_task=recipe.get("toy_task", "standard"))
    stream = iter(loader)
    for _ in range(batches):
        next(stream)
    state = loader.state_dict()
    del stream
    return [state]


def prepare(repo: Path, root: Path, at: list[int], batch_size: int, workers: int) -> dict[int, Path]:
    """A run folder per resume point, holding that step's checkpoint as `latest`."""
    runs = root / "runs"
    process = _start(repo, _flags(batch_size, workers, runs, "source"))
    source = runs / "source"
    first = RunFolder(source).checkpoint(10)
    _wait_for(process, lambda: first.is_file() and RunFolder(source).latest() is not None,
              "its step-10 checkpoint")
    _kill_tree(process)
    base = torch.load(first, map_location="cpu", weights_only=True)
    folders = {}
    for step in at:
        checkpoint = dict(base, step=step, samples_seen=step * batch_size)
        if "data" in checkpoint and step != base["step"]:
            print(f"computing the loader state after {step} batches ...", flush=True)
            checkpoint["data"] = _state_after(step, checkpoint, batch_size, workers)
        folder = RunFolder(runs / f"at{step}")
        folder.checkpoints.mkdir(parents=True)
        shutil.copy(RunFolder(source).config, folder.config)
        torch.save(checkpoint, folder.checkpoint(step))
        point_latest(folder.checkpoints, folder.checkpoint(step))
        folders[step] = folder.path
    return folders


def time_resume(repo: Path, folder: Path, step: int, batch_size: int, workers: int) -> float:
    """Seconds from starting `train.py --resume latest` to its first trained step being logged."""
    work = folder.parent / f"{folder.name}-try"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(folder, work)
    started = time.perf_counter()
    process = _start(repo, [*_flags(batch_size, workers, work.parent, work.name), "--resume", "latest"])
    _wait_for(process, lambda: _logged(work, step + 1), f"step {step + 1}")
    elapsed = time.perf_counter() - started
    _kill_tree(process)
    return elapsed


class _CountingFile(io.FileIO):
    """A shard file that counts the bytes read from it."""

    total = 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        _CountingFile.total += n or 0
        return n


def _write_laion_like(folder: Path, shards: int, per_shard: int) -> list[str]:
    """Shards of `per_shard` samples (jpg, txt, json), 64 distinct 256-px JPEGs of ~30 KB cycled."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    jpegs = []
    for i in range(64):
        pixels = np.stack([x, y, (x + y + 4 * i) // 2], -1) + rng.normal(0, 16, (256, 256, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    urls = []
    for s in range(shards):
        url = str(folder / f"{s:05d}.tar")
        with tarfile.open(url, "w") as tar:
            for i in range(per_shard):
                key = f"{s:05d}{i:05d}"
                for ext, data in (("jpg", jpegs[i % 64]), ("txt", f"a photo number {i}".encode()),
                                  ("json", json.dumps({"key": key}).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        urls.append(url)
    return urls


def restore_bench(batches: int, shards: int = 3, per_shard: int = 10_000, buffer: int = 5000,
                  batch_size: int = 256) -> dict:
    """Bytes and seconds of one worker stream's restore (see the module docstring)."""
    import random

    import webdataset

    from launch.train_stream import TrainStream, _Position, draw

    with tempfile.TemporaryDirectory(prefix="restore-bench-") as tmp:
        urls = _write_laion_like(Path(tmp), shards, per_shard)
        stream = TrainStream(urls, None, batch_size=batch_size, seed=0, rank=0, context_length=77,
                             shuffle_buffer=buffer)
        at = _Position(buffer)
        for _ in range(batches):  # the reading and picking of training, without the decode
            rng = random.Random(draw(0, 0, 0, "pick", at.batches))
            for _ in range(batch_size):
                stream._fill(0, at)
                stream._pick(rng, at)
            at.batches += 1
        state = stream.state(at)
        older = {k: v for k, v in state.items() if k != "offset"}
        older["buffer"] = state["buffer"][:, :2]
        real = webdataset.gopen
        webdataset.gopen = lambda url, mode="rb", **_: io.BufferedReader(_CountingFile(url))
        result = {"batches": batches, "buffer": int(len(state["buffer"])),
                  "samples_read": at.picks + len(at.raws), "shard_bytes": os.path.getsize(urls[0])}
        try:
            for name, chosen in (("by_offset", state), ("by_member_ordinal", older)):
                _CountingFile.total = 0
                started = time.perf_counter()
                restored = _Position(buffer)
                stream.restore(chosen, restored)
                stream._next_raw(0, restored)  # the reopened current shard's next sample
                result[name] = {"bytes": _CountingFile.total, "seconds": time.perf_counter() - started}
        finally:
            webdataset.gopen = real
    for name in ("by_offset", "by_member_ordinal"):
        took = result[name]
        print(f"restore {name}: {took['bytes'] / 1e6:8.1f} MB read in {took['seconds']:.2f} s")
    print(f"({result['buffer']} buffered samples after {batches} batches of {batch_size}; shards of "
          f"{per_shard} samples, {result['shard_bytes'] / 1e6:.0f} MB)")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(prog="python -m benchmarks.performance.resume_bench",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT,
                        help="checkout whose launch/train.py is timed")
    parser.add_argument("--at", type=int, nargs=2, default=[10, 3000], help="the two resume steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="resumes timed per step (median reported)")
    parser.add_argument("--restore", action="store_true", help="measure a worker stream's restore instead")
    parser.add_argument("--restore-batches", type=int, default=60,
                        help="batches of 256 the stream is moved in before its state is taken (default 60)")
    args = parser.parse_args(argv)
    if args.restore:
        if args.restore_batches < 1:
            parser.error("--restore-batches must be >= 1")
        result = restore_bench(args.restore_batches)
        print(json.dumps(result))
        return result
    if not (args.repo / "launch" / "train.py").is_file():
        parser.error(f"--repo {args.repo}: expected a checkout holding launch/train.py")
    if not (0 < args.at[0] < args.at[1] < STEPS) or args.repeats < 1 or args.batch_size < 1:
        parser.error(f"--at: expected 0 < a < b < {STEPS}; --repeats, --batch-size >= 1")
    with tempfile.TemporaryDirectory(prefix="resume-bench-") as tmp:
        folders = prepare(args.repo.resolve(), Path(tmp), args.at, args.batch_size, args.workers)
        times = {step: [] for step in args.at}
        for _ in range(args.repeats):  # interleaved, so that machine load hits both alike
            for step in args.at:
                times[step].append(time_resume(args.repo.resolve(), folders[step], step, args.batch_size,
                                               args.workers))
    medians = {step: statistics.median(values) for step, values in times.items()}
    low, high = args.at
    ratio = medians[high] / medians[low]
    for step in args.at:
        shown = ", ".join(f"{t:.1f}" for t in times[step])
        print(f"resume at step {step:>5}: launch -> first trained step {medians[step]:6.1f} s "
              f"(median of {shown})")
    print(f"ratio (step {high} / step {low}): {ratio:.2f}")
    result = {"repo": str(args.repo), "batch_size": args.batch_size, "workers": args.workers,
              "times_s": {str(k): v for k, v in times.items()}, "ratio": ratio}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    run_main(main)
