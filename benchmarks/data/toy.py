"""The embedded `toy` data set: drawn shapes with captions, written as real img2dataset-layout shards.

A new user without LAION trains and evaluates through exactly the code path of a LAION run: the toy
set is generated deterministically from a seed on first use into a cache folder and read back with
`benchmarks.data.shards` like any other WebDataset.

Content: one 64x64 px JPEG per sample with a *target* object (8 colours x 8 shapes = 64 classes; random
size, position and rotation) on a background of another colour, plus one smaller *distractor* object
of another colour and shape. The caption always names the target as "<colour> <shape>" (e.g. "a small
red triangle on a blue background", "red triangle, top left"); background, position, size and the
distractor are mentioned only sometimes (2 in 7 captions name the background, 2 in 7 the distractor;
`benchmarks.data.toy_captions`), the distractor always after the target and as "small", "little" or
"tiny", so colour + shape of the target is the one cue every caption shares.

Held-out combinations (version 5): 16 of the 64 colour x shape classes (`HELD_OUT_CLASSES`, two shapes per
colour and two colours per shape) never occur in the train split, neither as a target nor as a distractor,
so neither the image of that combination nor its name is ever trained; every colour and every shape still
is. The train split cycles through the 48 seen classes, the val split through all 64 (50 images each), and
zero-shot scores seen and held-out classes separately: the held-out score asks whether a tower composes.
Zero-shot prompts (`TOY_TEMPLATES`) are the caption templates that name only the target, so every prompt
token is a trained token; version 4's prompts (a final "." and "plain" that no caption has) stay as the
separately named robustness score (`TOY_ROBUSTNESS_TEMPLATES`).

Layout under `$MIXCLIP_CACHE` (default `~/.cache/mixclip`) / `toy-<seed>-v<VERSION>`:

    train/00000.tar ...   KEY.jpg, KEY.txt (caption), KEY.json (attributes)
    val/00000.tar ...     the same plus KEY.cls (class index); class-balanced
    classes.tsv           index, name ("red circle"), colour, shape
    manifest.json         sizes, seed, version and the sha256 of every file above

    from benchmarks.data.toy import ensure_toy
    toy = ensure_toy()               # generates on first use (~20k train + 2k val), then reuses the cache
    toy.train, toy.val               # brace patterns for --train-data / eval
    toy.class_names, toy.class_attributes, TOY_TEMPLATES

    python -m benchmarks.data.toy [--seed N] [--out DIR] [--num-train N] [--num-val N] [--force]

Every use checks the manifest (sha256 of every file) and regenerates a missing or corrupt set.
Generation writes into a temporary folder renamed into place, so a killed run never leaves a half
set. Each shard has its own seed, so the bytes do not depend on the number of processes; the same seed
gives the same manifest sha256 (on the same Pillow/libjpeg build).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.data import files as data_files
from benchmarks.data.toy_captions import CAPTION_TEMPLATES_BY_KIND, position_words, write_caption
from benchmarks.data.toy_drawing import draw_object

# Bump whenever the generator's output changes: the cache folder name carries it.
VERSION = 5
DEFAULT_NUM_TRAIN = 20_000
DEFAULT_NUM_VAL = 3_200  # 50 per class: 2,400 seen-class and 800 held-out-class images
DEFAULT_SHARD_SIZE = 1_000
IMAGE_SIZE = 64
SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges keep small shapes recognisable
JPEG_QUALITY = 90

# Object colours; every name starts with a consonant so "a {colour} {shape}" is always good English.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "brown": (130, 85, 45),
    "cyan": (40, 200, 210),
}
# Chosen to stay distinct under any rotation and scale (no square/diamond-like pairs).
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "heart", "crescent")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    **COLOURS,
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
MIN_BACKGROUND_DISTANCE = 110  # RGB distance between target and background: the target stays visible

CLASS_NAMES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
CLASS_ATTRIBUTES = tuple({"colour": colour, "shape": shape} for colour in COLOURS for shape in SHAPES)

# Held out of training: colour i with shapes i and i + 3 (mod 8), a Latin-square pattern, so each colour and
# each shape is held out in exactly two classes and trained in six.
HELD_OUT_SHAPE_OFFSETS = (0, 3)
HELD_OUT_CLASSES = tuple(sorted(c * len(SHAPES) + (c + k) % len(SHAPES)
                                for c in range(len(COLOURS)) for k in HELD_OUT_SHAPE_OFFSETS))
SEEN_CLASSES = tuple(i for i in range(len(CLASS_NAMES)) if i not in HELD_OUT_CLASSES)
HELD_OUT_PAIRS = frozenset((CLASS_ATTRIBUTES[i]["colour"], CLASS_ATTRIBUTES[i]["shape"])
                           for i in HELD_OUT_CLASSES)

# Zero-shot prompts: the caption templates that name the target and nothing else ("a {}", "a drawing of a
# {}", ...), so a prompt is made of trained tokens only (tests/test_data_toy.py checks it on the train split).
TOY_TEMPLATES = tuple(t.replace("{t}", "{}") for t in CAPTION_TEMPLATES_BY_KIND["target"]
                      if t.count("{") == 1)
# Version 4's prompts, kept as a robustness score: a final "." and the word "plain" occur in no caption.
TOY_ROBUSTNESS_TEMPLATES = (
    "a {}.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "a {} on a plain background.",
    "clip art of a {}.",
    "a simple {} shape.",
)

# Radii as a fraction of the image side: the target spans 50% to 80% of the image; the distractor 14% to
# 20%, so even a thin target (star, triangle) at its smallest covers twice the area of a large distractor.
TARGET_RADIUS = (0.25, 0.40)
DISTRACTOR_RADIUS = (0.07, 0.10)


@dataclass(frozen=True)
class ToyData:
    """Paths and metadata of a generated toy set."""

    root: Path
    train: str  # brace pattern of the train shards
    val: str  # brace pattern of the val shards (samples carry KEY.cls)
    classes_file: Path
    num_train: int
    num_val: int
    seed: int
    manifest_sha256: str
    class_names: tuple[str, ...] = CLASS_NAMES
    class_attributes: tuple[dict[str, str], ...] = CLASS_ATTRIBUTES
    templates: tuple[str, ...] = TOY_TEMPLATES
    held_out_classes: tuple[int, ...] = HELD_OUT_CLASSES


def _shard_counts(num: int, shard_size: int) -> list[int]:
    full, rest = divmod(num, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def _pattern(root: Path, split: str, num_shards: int) -> str:
    if num_shards == 1:
        return str(root / split / "00000.tar")
    return str(root / split / f"{{00000..{num_shards - 1:05d}}}.tar")


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 14) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def make_sample(rng: random.Random, class_index: int) -> tuple[bytes, str, dict]:
    """Draw one sample of class `class_index`: (JPEG bytes, caption, attributes)."""
    colour, shape = CLASS_ATTRIBUTES[class_index]["colour"], CLASS_ATTRIBUTES[class_index]["shape"]
    # The distractor has another colour and shape and is never a held-out combination (its name would
    # otherwise reach the text tower through the training captions).
    d_colour, d_shape = rng.choice([(c, s) for c in COLOURS for s in SHAPES
                                    if c != colour and s != shape and (c, s) not in HELD_OUT_PAIRS])
    target_rgb = COLOURS[colour]
    backgrounds = [
        name for name, rgb in BACKGROUNDS.items()
        if name not in (colour, d_colour) and math.dist(rgb, target_rgb) >= MIN_BACKGROUND_DISTANCE
    ]
    background = rng.choice(backgrounds)

    radius = rng.uniform(*TARGET_RADIUS)
    d_radius = rng.uniform(*DISTRACTOR_RADIUS)
    x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
    # Place the distractor clear of the target; shrink the target if it leaves no room.
    for attempt in range(200):
        dx, dy = rng.uniform(d_radius, 1 - d_radius), rng.uniform(d_radius, 1 - d_radius)
        if math.dist((x, y), (dx, dy)) >= radius + d_radius + 0.03:
            break
        if attempt % 20 == 19:
            radius = max(TARGET_RADIUS[0], radius * 0.92)
            x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
    rotation, d_rotation = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)

    side = IMAGE_SIZE * SUPERSAMPLE
    img = Image.new("RGB", (side, side), _jitter(BACKGROUNDS[background], rng))
    draw_object(img, shape, _jitter(target_rgb, rng), x * side, y * side, radius * side, rotation)
    draw_object(img, d_shape, _jitter(COLOURS[d_colour], rng), dx * side, dy * side, d_radius * side,
                 d_rotation)
    img = img.reduce(SUPERSAMPLE)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)

    caption = write_caption(rng, colour, shape, radius, (x, y), background, d_colour, d_shape)
    attributes = {
        "class": class_index, "colour": colour, "shape": shape, "radius": round(radius, 4),
        "center": [round(x, 4), round(y, 4)], "rotation_deg": round(math.degrees(rotation), 2),
        "background": background, "position": position_words(x, y)[1],
        "distractor": {"colour": d_colour, "shape": d_shape, "radius": round(d_radius, 4),
                       "center": [round(dx, 4), round(dy, 4)]},
    }
    return buf.getvalue(), caption, attributes


def _write_shard(task: tuple[str, int, int, int, int, int, int]) -> tuple[str, str]:
    """Write one shard (runs in a pool worker); returns (relative path, sha256)."""
    import webdataset as wds  # imported here: the pool workers need it, `--help` does not

    tmp_root, seed, split_index, shard, count, start, shard_size = task
    split = ("train", "val")[split_index]
    # One RNG per shard, seeded by (seed, split, shard) only: the output cannot depend on the pool.
    rng = random.Random(f"mixclip-toy/{VERSION}/{seed}/{split}/{shard}")
    rel = f"{split}/{shard:05d}.tar"
    digits = len(str(shard_size - 1))
    path = Path(tmp_root) / rel
    with open(path, "wb") as f, wds.TarWriter(f, mtime=0, user="mixclip", group="mixclip") as sink:
        for i in range(count):
            # Class-balanced: consecutive global indices cycle through the 48 seen classes (train) or
            # all 64 (val).
            classes = SEEN_CLASSES if split == "train" else range(len(CLASS_NAMES))
            class_index = classes[(start + i) % len(classes)]
            image, caption, attributes = make_sample(rng, class_index)
            key = f"{shard:05d}{i:0{digits}d}"
            meta = {"key": key, "caption": caption, "status": "success", "width": IMAGE_SIZE,
                    "height": IMAGE_SIZE, **attributes}
            sample = {"__key__": key, "jpg": image, "txt": caption,
                      "json": json.dumps(meta, sort_keys=True)}
            if split == "val":
                sample["cls"] = str(class_index)
            sink.write(sample)
    return rel, data_files.file_sha256(path)


# ---------------------------------------------------------------- cache


def _folder_name(seed: int, num_train: int, num_val: int, shard_size: int) -> str:
    name = f"toy-{seed}-v{VERSION}"
    if (num_train, num_val, shard_size) != (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SHARD_SIZE):
        name += f"-{num_train}x{num_val}s{shard_size}"
    return name


def _expected_header(seed: int, num_train: int, num_val: int, shard_size: int) -> dict:
    return {"name": "toy", "version": VERSION, "seed": seed, "num_train": num_train, "num_val": num_val,
            "shard_size": shard_size, "image_size": IMAGE_SIZE}


def _check(root: Path, header: dict) -> str | None:
    """sha256 of the manifest if the set in `root` is complete and intact, else None."""
    manifest_path = root / "manifest.json"
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
        if {k: manifest.get(k) for k in header} != header or not manifest.get("files"):
            return None
        for rel, digest in manifest["files"].items():
            if data_files.file_sha256(root / rel) != digest:
                return None
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return hashlib.sha256(raw).hexdigest()


def _generate(tmp: Path, seed: int, num_train: int, num_val: int, shard_size: int, processes: int,
              progress: bool) -> None:
    from tqdm import tqdm

    tasks = []
    for split_index, num in enumerate((num_train, num_val)):
        (tmp / ("train", "val")[split_index]).mkdir(parents=True)
        for shard, count in enumerate(_shard_counts(num, shard_size)):
            tasks.append((str(tmp), seed, split_index, shard, count, shard * shard_size, shard_size))
    files: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=max(1, min(processes, len(tasks)))) as pool:
        results = pool.map(_write_shard, tasks)
        for rel, digest in tqdm(results, total=len(tasks), desc="toy shards", disable=not progress,
                                unit="shard"):
            files[rel] = digest
    lines = ["index\tname\tcolour\tshape\tsplit"]
    lines += [f"{i}\t{n}\t{a['colour']}\t{a['shape']}\t{'held-out' if i in HELD_OUT_CLASSES else 'seen'}"
              for i, (n, a) in enumerate(zip(CLASS_NAMES, CLASS_ATTRIBUTES, strict=True))]
    (tmp / "classes.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files["classes.tsv"] = data_files.file_sha256(tmp / "classes.tsv")
    manifest = {**_expected_header(seed, num_train, num_val, shard_size),
                "files": dict(sorted(files.items()))}
    # The manifest is written last: a folder without it never passes the check.
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                       encoding="utf-8")


def _remove_stale(cache: Path, name: str, age_s: float = 3600) -> None:
    """Delete temporary folders of killed generations (old enough not to be another node's live one)."""
    for path in cache.glob(f".{name}.tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > age_s:
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialise generation between processes of one machine (e.g. 8 ranks starting together)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_toy(cache_dir: str | os.PathLike | None = None, seed: int = 0, *,
               num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
               shard_size: int = DEFAULT_SHARD_SIZE, processes: int | None = None,
               force: bool = False, progress: bool = True) -> ToyData:
    """Return the toy set for `seed`, generating it into `cache_dir` first if it is missing, corrupt
    or `force` is set. `cache_dir` defaults to `$MIXCLIP_CACHE` or `~/.cache/mixclip`."""
    if num_train < 1 or num_val < 1 or not 1 <= shard_size <= 10_000:
        raise ValueError("toy sizes: num_train and num_val must be >= 1, shard_size in 1..10000")
    cache = Path(cache_dir) if cache_dir is not None else data_files.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = _folder_name(seed, num_train, num_val, shard_size)
    root = cache / name
    header = _expected_header(seed, num_train, num_val, shard_size)

    digest = None if force else _check(root, header)
    if digest is None:
        with _lock(cache / f".{name}.lock"):
            digest = None if force else _check(root, header)  # another process may have finished it
            if digest is None:
                _remove_stale(cache, name)
                tmp = cache / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    _generate(tmp, seed, num_train, num_val, shard_size, processes or os.cpu_count() or 1,
                              progress)
                    if root.exists():  # corrupt or forced: move aside first, rename is atomic
                        trash = cache / f".{name}.old-{uuid.uuid4().hex[:8]}"
                        root.rename(trash)
                        shutil.rmtree(trash, ignore_errors=True)
                    tmp.rename(root)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                digest = _check(root, header)
                if digest is None:
                    raise RuntimeError(f"toy data set in {root} failed its manifest check after generation")
    return ToyData(
        root=root,
        train=_pattern(root, "train", len(_shard_counts(num_train, shard_size))),
        val=_pattern(root, "val", len(_shard_counts(num_val, shard_size))),
        classes_file=root / "classes.tsv",
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        manifest_sha256=digest,
    )


def _disk_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data.toy", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    parser.add_argument("--out", default=None,
                        help="cache folder (default $MIXCLIP_CACHE or ~/.cache/mixclip)")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="train samples")
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="val samples")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="samples per shard")
    parser.add_argument("--processes", type=int, default=None,
                        help="generation processes (default: all cores)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the cache is intact")
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        parser.error("--num-train and --num-val must be >= 1")
    if not 1 <= args.shard_size <= 10_000:
        parser.error("--shard-size must be in 1..10000")
    start = time.perf_counter()
    toy = ensure_toy(args.out, args.seed, num_train=args.num_train, num_val=args.num_val,
                     shard_size=args.shard_size, processes=args.processes, force=args.force)
    elapsed = time.perf_counter() - start
    print(f"toy set: {toy.root}  ({toy.num_train} train, {toy.num_val} val, "
          f"{_disk_size(toy.root) / 1e6:.1f} MB, ready in {elapsed:.1f} s)")
    print(f"  train: {toy.train}\n  val:   {toy.val}\n  manifest sha256: {toy.manifest_sha256}")


if __name__ == "__main__":
    main(sys.argv[1:])
