"""Synthetic JPEG shards of any image size, in the img2dataset layout, for timing the training loader.

The toy set is 64 px; a GPU's loader has to decode and crop LAION-sized JPEGs for a 224 px model.
These shards hold smooth random images (a random 6x6 colour grid, bicubically upsampled, plus a
little noise, so they compress and decode like photos rather than like noise) with short captions:

    from benchmarks.data.jpeg_shards import write_jpeg_shards
    spec = write_jpeg_shards("/tmp/shards", num_samples=4096, side=256)   # brace pattern of the tars

    python -m benchmarks.data.jpeg_shards --out /tmp/shards --num-samples 4096 --side 256

Deterministic in the seed (one RNG per shard, so the bytes do not depend on the process count).
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from runfolder.errors import OneLineParser, run_main

WORDS = ("red", "blue", "green", "striped", "blurry", "bright", "dark", "soft", "sunset", "forest",
         "ocean", "city", "street", "portrait", "texture", "pattern", "photo", "painting")
JPEG_QUALITY = 90


def make_image(rng: np.random.Generator, side: int) -> bytes:
    """One smooth random RGB JPEG of side x side pixels."""
    grid = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    pixels = np.asarray(grid.resize((side, side), Image.BICUBIC), dtype=np.int16)
    pixels = pixels + rng.integers(-6, 7, pixels.shape, dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG",
                                                                 quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_shard(task: tuple[str, int, int, int, int]) -> str:
    import webdataset as wds  # imported here: the pool workers need it, `--help` does not

    path, seed, shard, count, side = task
    rng = np.random.default_rng([seed, shard])
    with open(path, "wb") as f, wds.TarWriter(f, mtime=0, user="mixclip", group="mixclip") as sink:
        for i in range(count):
            key = f"{shard:05d}{i:04d}"
            caption = "a " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
            sink.write({"__key__": key, "jpg": make_image(rng, side), "txt": caption,
                        "json": json.dumps({"key": key, "caption": caption, "width": side, "height": side})})
    return path


def write_jpeg_shards(out: str | Path, num_samples: int, side: int = 256, shard_size: int = 512,
                      seed: int = 0, processes: int = 4) -> str:
    """Write ceil(num_samples / shard_size) shards to `out`; returns their brace pattern."""
    if num_samples < 1 or side < 8 or not 1 <= shard_size <= 10_000:
        raise ValueError("write_jpeg_shards: need num_samples >= 1, side >= 8, 1 <= shard_size <= 10000")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [min(shard_size, num_samples - start) for start in range(0, num_samples, shard_size)]
    tasks = [(str(out / f"{shard:05d}.tar"), seed, shard, count, side) for shard, count in enumerate(counts)]
    if processes > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(min(processes, len(tasks))) as pool:
            list(pool.map(_write_shard, tasks))
    else:
        for task in tasks:
            _write_shard(task)
    return str(out / f"{{00000..{len(counts) - 1:05d}}}.tar")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m benchmarks.data.jpeg_shards",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the shards")
    parser.add_argument("--num-samples", type=int, default=4096, help="samples (default 4096)")
    parser.add_argument("--side", type=int, default=256, help="image side in px (default 256)")
    parser.add_argument("--shard-size", type=int, default=512, help="samples per shard (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = parser.parse_args(argv)
    try:
        print(write_jpeg_shards(args.out, args.num_samples, args.side, args.shard_size, args.seed))
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    run_main(main)
