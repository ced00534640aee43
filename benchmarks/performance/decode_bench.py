"""The JPEG decode ceiling: samples/s per CPU core of decode + the training transform, per decoder path.

    python -m benchmarks.performance.decode_bench  # 256, 512, 1024 px originals, 224 crop
    python -m benchmarks.performance.decode_bench --simd-python /tmp/simd/bin/python --json decode.json

Same images for every path (smooth random JPEGs from benchmarks.data.jpeg_shards, quality 90, square
like img2dataset's default 256 px "border" output, and larger originals), crop boxes from
RandomResizedCrop (the torch paths draw their own, the others get pre-drawn ones: equal in
distribution), one process pinned to one core and one torch thread, the paths alternated pass by pass,
the median pass kept. Rates are per CPU second of this process (robust to
other jobs on a shared machine) and per wall second. Paths:

    pil, pil-draft, torchvision, device   launch.decoders (device: the worker's share only, i.e. the
                                          header read and the byte copy; the decode runs on the GPU)
    simplejpeg, simplejpeg-fast           libjpeg-turbo's scaled decode through simplejpeg (if
                                          installed), fast: its fast IDCT and upsampling; PIL resize
    pillow, pillow-simd (+ -draft)        a pure-PIL pass (no torch) in a subprocess: this venv's
                                          Pillow and, with --simd-python, a separate venv's
                                          pillow-simd (it replaces Pillow, so never in this venv)

Also tokenize per sample (the worker's other per-sample cost). Measurements: docs/gpu_path.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.data.files import REPO_ROOT
from benchmarks.data.jpeg_shards import make_image
from runfolder.errors import OneLineParser, run_main

SIDES = (256, 512, 1024)


# ---------------------------------------------------------------- pure PIL (runs without torch)


def pure_pil(data: bytes, box: tuple[int, int, int, int], size: int, draft: bool) -> np.ndarray:
    """Decode, crop, bicubic resize, to an array: the pil decoder's work without torch."""
    top, left, h, w = box
    image = Image.open(io.BytesIO(data))
    if draft:
        width, height = image.size
        image.draft("RGB", (-(-width * size // w), -(-height * size // h)))
        sx, sy = image.size[0] / width, image.size[1] / height
        image = _rgb(image).resize((size, size), Image.BICUBIC,
                                   box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
    else:
        image = _rgb(image).crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)
    return np.asarray(image)


def _rgb(image: Image.Image) -> Image.Image:
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def _pure_pil_child(path: str) -> None:
    """Subprocess mode: time pure_pil over the pickled images, print {variant: [cpu s per pass]}."""
    job = pickle.loads(Path(path).read_bytes())
    _pin(job["core"])
    out = {}
    for draft in (False, True):
        passes = []
        for _ in range(job["repeats"]):
            start = time.process_time()
            for data, box in zip(job["images"], job["boxes"], strict=True):
                pure_pil(data, box, job["size"], draft)
            passes.append(time.process_time() - start)
        out["draft" if draft else "full"] = passes
    print(json.dumps({"pillow": Image.__version__, **out}))


def _pin(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


# ---------------------------------------------------------------- the bench


def _paths(size: int) -> dict:
    """name -> callable(bytes, box) -> uint8 crop, for the paths runnable in this interpreter."""
    import torch

    import towers
    from launch.data import Uint8Images
    from launch.decoders import WorkerDecoder, crop_tensor

    transform = towers.image_transform(size, train=True)
    uint8_part, _ = Uint8Images.split(transform)
    paths = {}

    from benchmarks.data.shards import load_rgb

    # The torch paths draw their own boxes (as in training; equal in distribution to the others' boxes).
    # Nothing is seeded per image: torch.manual_seed costs ~100 us, more than a crop (the loader seeds
    # once per batch).
    paths["pil"] = lambda data, box: uint8_part(load_rgb(data))  # today's worker
    for kind in ("pil-draft", "torchvision", "device"):
        decoder = WorkerDecoder(kind, transform)
        paths[kind] = lambda data, box, d=decoder: d(data)[0]
    try:
        import simplejpeg
    except ImportError:
        return paths

    def scaled(data, box, fast):
        top, left, h, w = box
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=fast, fastupsample=fast,
                                        min_height=-(-height * size // h), min_width=-(-width * size // w))
        sy, sx = pixels.shape[0] / height, pixels.shape[1] / width
        scaled_box = (round(top * sy), round(left * sx), max(1, round(h * sy)), max(1, round(w * sx)))
        return crop_tensor(torch.from_numpy(pixels).permute(2, 0, 1), scaled_box, size)
    paths["simplejpeg"] = lambda data, box: scaled(data, box, False)
    paths["simplejpeg-fast"] = lambda data, box: scaled(data, box, True)
    return paths


def _boxes(images: list[bytes], size: int, seed: int) -> list[tuple[int, int, int, int]]:
    import torch

    import towers
    from launch.decoders import draw_box, random_resized_crop

    crop = random_resized_crop(towers.image_transform(size, train=True))
    boxes = []
    for i, data in enumerate(images):
        torch.manual_seed(seed + i)
        width, height = Image.open(io.BytesIO(data)).size
        boxes.append(draw_box(crop, height, width))
    return boxes


def _child(python: str, job: Path) -> dict:
    done = subprocess.run([python, "-m", "benchmarks.performance.decode_bench", "--pure-pil-child", str(job)],
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"{python}: pure-PIL pass failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_side(side: int, n: int, size: int, repeats: int, core: int | None, simd_python: str | None,
               seed: int = 0) -> dict:
    """Per-path rates on n images of side x side px; ratios to `pil` (same run)."""
    import towers

    rng = np.random.default_rng([seed, side])
    images = [make_image(rng, side) for _ in range(n)]
    boxes = _boxes(images, size, seed)
    paths = _paths(size)
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    wall: dict[str, list[float]] = {name: [] for name in paths}
    pythons = {"pillow": sys.executable, **({"pillow-simd": simd_python} if simd_python else {})}
    pure: dict[str, dict] = {label: {"full": [], "draft": []} for label in pythons}
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.pkl"
        job.write_bytes(pickle.dumps({"images": images, "boxes": boxes, "size": size, "core": core,
                                      "repeats": 1}))
        for r in range(repeats):  # every path once per pass, the order rotated, the children after them
            names = list(paths)
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn = paths[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                for data, box in zip(images, boxes, strict=True):
                    fn(data, box)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
            for label, python in pythons.items():
                result = _child(python, job)
                pure[label]["version"] = result["pillow"]
                for variant in ("full", "draft"):
                    pure[label][variant] += result[variant]
    rows = {name: {"samples_per_cpu_s": n / statistics.median(cpu[name]),
                   "samples_per_wall_s": n / statistics.median(wall[name])} for name in paths}
    captions = ["a " + " ".join(["red", "striped", "sunset", "photo", "of", "a", "city"][: 3 + i % 5])
                for i in range(256)]
    start = time.process_time()
    for _ in range(4):
        towers.tokenize(captions)
    tokenize_us = (time.process_time() - start) / (4 * len(captions)) * 1e6
    for label, result in pure.items():
        for variant, suffix in (("full", ""), ("draft", "-draft")):
            rows[f"{label}{suffix}"] = {"samples_per_cpu_s": n / statistics.median(result[variant]),
                                        "samples_per_wall_s": None, "version": result["version"]}
    for row in rows.values():
        row["ratio_to_pil"] = row["samples_per_cpu_s"] / rows["pil"]["samples_per_cpu_s"]
    mean_bytes = sum(map(len, images)) / n
    return {"side": side, "n": n, "mean_jpeg_bytes": mean_bytes, "tokenize_us": tokenize_us, "paths": rows}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> dict | None:
    parser = OneLineParser(prog="python -m benchmarks.performance.decode_bench",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=list(SIDES), help="original sides (px)")
    parser.add_argument("--images", type=int, default=64, help="images per side (default 64)")
    parser.add_argument("--image-size", type=int, default=224, help="crop output size (default 224)")
    parser.add_argument("--repeats", type=int, default=5, help="passes per path (default 5; median kept)")
    parser.add_argument("--core", type=int, default=None, help="pin to this CPU core (default: the last)")
    parser.add_argument("--simd-python", default=None, help="python of a separate venv with pillow-simd")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    parser.add_argument("--pure-pil-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pure_pil_child:
        _pure_pil_child(args.pure_pil_child)
        return None
    if min(args.images, args.repeats, args.image_size, *args.sides) < 1 or min(args.sides) < args.image_size:
        parser.exit(2, "error: --images, --repeats >= 1; every --sides >= --image-size\n")
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if args.core is not None and allowed is not None and args.core not in allowed:
        parser.exit(2, f"error: --core {args.core}: not a core this process may run on\n")
    if args.simd_python and not Path(args.simd_python).is_file():
        parser.exit(2, f"error: --simd-python {args.simd_python}: no such file\n")
    import torch

    core = args.core if args.core is not None else max(os.sched_getaffinity(0)) \
        if hasattr(os, "sched_getaffinity") else None
    _pin(core)
    torch.set_num_threads(1)
    result = {"cpu": _cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "core": core,
              "image_size": args.image_size, "sides": []}
    for side in args.sides:
        row = bench_side(side, args.images, args.image_size, args.repeats, core, args.simd_python)
        result["sides"].append(row)
        print(f"{side} px originals ({row['mean_jpeg_bytes'] / 1024:.0f} KiB JPEGs) -> {args.image_size} px "
              f"crops, per CPU second on one core ({result['cpu_capability']}); tokenize "
              f"{row['tokenize_us']:.0f} us/sample")
        for name, path in row["paths"].items():
            wall = path["samples_per_wall_s"]
            print(f"  {name:<18}{path['samples_per_cpu_s']:8.0f}/s  {path['ratio_to_pil']:5.2f}x pil"
                  + (f"  (wall {wall:.0f}/s)" if wall else f"  (Pillow {path['version']})"), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run_main(main)
