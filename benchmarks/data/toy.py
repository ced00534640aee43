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

Held-out combinations (version 5): 16 of the 64 colour x shape classes (`held_out_classes(seed)`, two shapes
per colour and two colours per shape) never occur in the train split, neither as a target nor as a
distractor, so neither the image of that combination nor its name is ever trained; every colour and every
shape still is. Which 16 depends on the seed (the square is shifted by it; seed 0's are colour i with shapes
i and i + 3), and every set records its own in classes.tsv: an evaluator reads them from there
(`read_toy_set`), never from a constant. The train split cycles through the 48 seen classes, the val split
through all 64 (50 images each), and zero-shot scores seen and held-out classes separately: the held-out
score asks whether a tower composes.

Tasks (`runfolder.vocabulary.TOY_TASKS`): `standard` (the above) and `hard`: a target of half the size among
3 to 5 distractors of nearly its size (HARD_* below); the captions and their vocabulary are the same.
Zero-shot prompts (`TOY_TEMPLATES`) are the caption templates that name only the target, so every prompt
token is a trained token; version 4's prompts (a final "." and "plain" that no caption has) stay as the
separately named robustness score (`TOY_ROBUSTNESS_TEMPLATES`).

Layout under `$MIXCLIP_CACHE` (default `~/.cache/mixclip`) / `toy-<seed>-v<VERSION>` (the hard task:
`toy-<seed>-hard-v<VERSION>`):

    train/00000.tar ...   KEY.jpg, KEY.txt (caption), KEY.json (attributes)
    val/00000.tar ...     the same plus KEY.cls (class index); class-balanced
    classes.tsv           index, name ("red circle"), colour, shape, split (seen / held-out)
    manifest.json         sizes, seed, version, task (when not standard) and the sha256 of every file above

    from benchmarks.data.toy import ensure_toy
    toy = ensure_toy()               # generates on first use (~20k train + 2k val), then reuses the cache
    toy.train, toy.val               # brace patterns for --train-data / eval
    toy.class_names, toy.class_attributes, toy.held_out_classes, TOY_TEMPLATES
    ensure_toy(seed=1, task="hard")  # another held-out square; the hard task

    python -m benchmarks.data.toy [--seed N] [--task hard] [--out DIR] [--num-train N] [--num-val N] [--force]

Every use checks the manifest (sha256 of every file) and regenerates a missing or corrupt set.
Generation writes into a temporary folder renamed into place, so a killed run never leaves a half
set. Each shard has its own seed, so the bytes do not depend on the number of processes; the same seed
gives the same manifest sha256 (on the same Pillow/libjpeg build).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.data import files as data_files
from benchmarks.data.toy_captions import CAPTION_TEMPLATES_BY_KIND

# The classes and one sample's drawing are toy_scene's; the set's users also read the classes here.
from benchmarks.data.toy_scene import BACKGROUNDS as BACKGROUNDS
from benchmarks.data.toy_scene import (
    CLASS_ATTRIBUTES,
    CLASS_NAMES,
    IMAGE_SIZE,
    held_out_classes,
    held_out_pairs,
    make_sample,
    seen_classes,
)
from benchmarks.data.toy_scene import COLOURS as COLOURS
from benchmarks.data.toy_scene import MIN_BACKGROUND_DISTANCE as MIN_BACKGROUND_DISTANCE
from benchmarks.data.toy_scene import SHAPES as SHAPES
from runfolder.errors import OneLineParser, run_main
from runfolder.vocabulary import TOY_TASKS

# Bump whenever the generator's output changes: the cache folder name carries it.
VERSION = 5
DEFAULT_NUM_TRAIN = 20_000
DEFAULT_NUM_VAL = 3_200  # 50 per class: 2,400 seen-class and 800 held-out-class images
DEFAULT_SHARD_SIZE = 1_000
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
    task: str  # runfolder.vocabulary.TOY_TASKS
    held_out_classes: tuple[int, ...]  # as classes.tsv records them
    class_names: tuple[str, ...] = CLASS_NAMES
    class_attributes: tuple[dict[str, str], ...] = CLASS_ATTRIBUTES
    templates: tuple[str, ...] = TOY_TEMPLATES

    @property
    def seen_classes(self) -> tuple[int, ...]:
        return seen_classes(self.held_out_classes)


def _shard_counts(num: int, shard_size: int) -> list[int]:
    full, rest = divmod(num, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def _pattern(root: Path, split: str, num_shards: int) -> str:
    if num_shards == 1:
        return str(root / split / "00000.tar")
    return str(root / split / f"{{00000..{num_shards - 1:05d}}}.tar")


def _write_shard(job: tuple[str, int, str, int, int, int, int, int]) -> tuple[str, str]:
    """Write one shard (runs in a pool worker); returns (relative path, sha256)."""
    import webdataset as wds  # imported here: the pool workers need it, `--help` does not

    tmp_root, seed, task, split_index, shard, count, start, shard_size = job
    split = ("train", "val")[split_index]
    # One RNG per shard, seeded by (seed, task, split, shard) only: the output cannot depend on the pool.
    stream = f"{seed}/{split}/{shard}" if task == "standard" else f"{seed}/{task}/{split}/{shard}"
    rng = random.Random(f"mixclip-toy/{VERSION}/{stream}")
    held_out = held_out_classes(seed)
    excluded = held_out_pairs(held_out)
    rel = f"{split}/{shard:05d}.tar"
    digits = len(str(shard_size - 1))
    path = Path(tmp_root) / rel
    with open(path, "wb") as f, wds.TarWriter(f, mtime=0, user="mixclip", group="mixclip") as sink:
        for i in range(count):
            # Class-balanced: consecutive global indices cycle through the 48 seen classes (train) or
            # all 64 (val).
            classes = seen_classes(held_out) if split == "train" else range(len(CLASS_NAMES))
            class_index = classes[(start + i) % len(classes)]
            image, caption, attributes = make_sample(rng, class_index, excluded, task)
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

CLASSES_HEADER = "index\tname\tcolour\tshape\tsplit"


def _folder_name(seed: int, num_train: int, num_val: int, shard_size: int, task: str = "standard") -> str:
    name = f"toy-{seed}-v{VERSION}" if task == "standard" else f"toy-{seed}-{task}-v{VERSION}"
    if (num_train, num_val, shard_size) != (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SHARD_SIZE):
        name += f"-{num_train}x{num_val}s{shard_size}"
    return name


def _expected_header(seed: int, num_train: int, num_val: int, shard_size: int,
                     task: str = "standard") -> dict:
    """The manifest's fields besides its files; `task` only when not standard (the standard sets' manifests,
    and so their sha256, stay what version 5 wrote)."""
    header = {"name": "toy", "version": VERSION, "seed": seed, "num_train": num_train, "num_val": num_val,
              "shard_size": shard_size, "image_size": IMAGE_SIZE}
    return header if task == "standard" else {**header, "task": task}


def _check(root: Path, header: dict) -> str | None:
    """sha256 of the manifest if the set in `root` is complete and intact, else None."""
    manifest_path = root / "manifest.json"
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
        if {k: manifest.get(k) for k in header} != header or not manifest.get("files") \
                or manifest.get("task", "standard") != header.get("task", "standard"):
            return None
        for rel, digest in manifest["files"].items():
            if data_files.file_sha256(root / rel) != digest:
                return None
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return hashlib.sha256(raw).hexdigest()


def _generate(tmp: Path, seed: int, task: str, num_train: int, num_val: int, shard_size: int, processes: int,
              progress: bool) -> None:
    from tqdm import tqdm

    jobs = []
    for split_index, num in enumerate((num_train, num_val)):
        (tmp / ("train", "val")[split_index]).mkdir(parents=True)
        for shard, count in enumerate(_shard_counts(num, shard_size)):
            jobs.append((str(tmp), seed, task, split_index, shard, count, shard * shard_size, shard_size))
    files: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=max(1, min(processes, len(jobs)))) as pool:
        results = pool.map(_write_shard, jobs)
        for rel, digest in tqdm(results, total=len(jobs), desc="toy shards", disable=not progress,
                                unit="shard"):
            files[rel] = digest
    held_out = held_out_classes(seed)
    lines = [CLASSES_HEADER]
    lines += [f"{i}\t{n}\t{a['colour']}\t{a['shape']}\t{'held-out' if i in held_out else 'seen'}"
              for i, (n, a) in enumerate(zip(CLASS_NAMES, CLASS_ATTRIBUTES, strict=True))]
    (tmp / "classes.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files["classes.tsv"] = data_files.file_sha256(tmp / "classes.tsv")
    manifest = {**_expected_header(seed, num_train, num_val, shard_size, task),
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


def ensure_toy(cache_dir: str | os.PathLike | None = None, seed: int = 0, *, task: str = "standard",
               num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
               shard_size: int = DEFAULT_SHARD_SIZE, processes: int | None = None,
               force: bool = False, progress: bool = True) -> ToyData:
    """Return the toy set for `seed` and `task`, generating it into `cache_dir` first if it is missing,
    corrupt or `force` is set. `cache_dir` defaults to `$MIXCLIP_CACHE` or `~/.cache/mixclip`."""
    if num_train < 1 or num_val < 1 or not 1 <= shard_size <= 10_000:
        raise ValueError("toy sizes: num_train and num_val must be >= 1, shard_size in 1..10000")
    if task not in TOY_TASKS or seed < 0:
        raise ValueError(f"toy: task must be one of {TOY_TASKS} and seed >= 0, not {task!r}, {seed}")
    cache = Path(cache_dir) if cache_dir is not None else data_files.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = _folder_name(seed, num_train, num_val, shard_size, task)
    root = cache / name
    header = _expected_header(seed, num_train, num_val, shard_size, task)

    digest = None if force else _check(root, header)
    if digest is None:
        with _lock(cache / f".{name}.lock"):
            digest = None if force else _check(root, header)  # another process may have finished it
            if digest is None:
                _remove_stale(cache, name)
                tmp = cache / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    _generate(tmp, seed, task, num_train, num_val, shard_size,
                              processes or os.cpu_count() or 1, progress)
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
        task=task,
        held_out_classes=_read_held_out(root),
    )


def _read_held_out(root: Path) -> tuple[int, ...]:
    """The held-out class indices classes.tsv of the set in `root` records (ValueError if malformed)."""
    lines = (root / "classes.tsv").read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != CLASSES_HEADER or len(lines) != len(CLASS_NAMES) + 1:
        raise ValueError(f"{root / 'classes.tsv'}: expected {CLASSES_HEADER!r} and {len(CLASS_NAMES)} rows")
    return tuple(i for i, line in enumerate(lines[1:]) if line.rsplit("\t", 1)[-1] == "held-out")


def read_toy_set(root: str | os.PathLike) -> dict:
    """What an evaluator needs from the generated set in `root` (a toy-* folder) without regenerating
    it: {"seed", "task", "held_out_classes", "manifest_sha256"}, read from its manifest and its
    classes.tsv (checked against the manifest's sha256). ValueError naming the file if either is missing,
    malformed or does not match."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
        recorded = manifest["files"]["classes.tsv"]
        seed, task = int(manifest["seed"]), manifest.get("task", "standard")
        if data_files.file_sha256(root / "classes.tsv") != recorded:
            raise ValueError(f"{root / 'classes.tsv'}: its sha256 is not the one {manifest_path} records")
        held_out = _read_held_out(root)
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{manifest_path}: not a toy set's manifest with classes.tsv beside it "
                         f"({exc})") from None
    if manifest.get("name") != "toy" or task not in TOY_TASKS:
        raise ValueError(f"{manifest_path}: not a toy set (name {manifest.get('name')!r}, task {task!r})")
    return {"seed": seed, "task": task, "held_out_classes": held_out,
            "manifest_sha256": hashlib.sha256(raw).hexdigest()}


def _disk_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m benchmarks.data.toy", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0,
                        help="generation seed; it also shifts the held-out classes (default 0)")
    parser.add_argument("--task", choices=TOY_TASKS, default="standard",
                        help="standard, or hard: smaller targets among 3-5 distractors (default standard)")
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
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    start = time.perf_counter()
    toy = ensure_toy(args.out, args.seed, task=args.task, num_train=args.num_train, num_val=args.num_val,
                     shard_size=args.shard_size, processes=args.processes, force=args.force)
    elapsed = time.perf_counter() - start
    print(f"toy set: {toy.root}  ({toy.num_train} train, {toy.num_val} val, "
          f"{_disk_size(toy.root) / 1e6:.1f} MB, ready in {elapsed:.1f} s)")
    print(f"  train: {toy.train}\n  val:   {toy.val}\n  manifest sha256: {toy.manifest_sha256}")
    print(f"  task {toy.task}; held-out classes: {', '.join(CLASS_NAMES[i] for i in toy.held_out_classes)}")


if __name__ == "__main__":
    run_main(main)
