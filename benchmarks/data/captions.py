"""Captioned images for retrieval and word-order tasks: a folder with `captions.tsv`, or the toy val split.

    data = load_caption_folder(shared_data_dir() / "captions")   # COCO: 159 images, 795 captions
    data = load_toy_split(limit=500)                              # one caption per toy image
    data.captions[t], data.caption_image[t], data.open_image(i)

A captioned folder from COCO's own release (docs/data.md#coco-captions):

    python -m benchmarks.data.captions --coco annotations/captions_val2017.json --images val2017/ \
        --out coco-val2017/      # writes coco-val2017/captions.tsv; the images stay where they are
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.data import toy as toy_data
from benchmarks.data.files import InputError
from benchmarks.data.shards import ShardSpecError, eval_loader
from runfolder.errors import OneLineParser, run_main

CAPTIONS_LAYOUT = "DIR/captions.tsv (file<TAB>caption, file relative to DIR, e.g. images/x.jpg) + the images"
# Where a user without the shared folder gets a captioned set (the runners name it in their errors).
CAPTIONS_HOWTO = ("make one from COCO with python -m benchmarks.data.captions --coco captions_val2017.json "
                  "--images val2017/ --out DIR (docs/data.md#coco-captions)")


@dataclass
class CaptionedImages:
    """Images (loaded lazily by ``open_image``) and captions; ``caption_image[t]``: image of caption t."""

    name: str
    image_ids: list[str]
    captions: list[str]
    caption_image: list[int]
    open_image: Callable[[int], Image.Image]


def load_caption_folder(root: str | Path) -> CaptionedImages:
    """A folder with ``captions.tsv`` (one header line, split on tab: captions contain quotes)."""
    root = Path(root)
    table = root / "captions.tsv"
    if not table.is_file():
        raise InputError(f"--data {root}: no captions.tsv; expected {CAPTIONS_LAYOUT}")
    lines = table.read_text(encoding="utf-8").rstrip("\n").split("\n")
    if lines[0].split("\t") != ["file", "caption"]:
        raise InputError(f"{table}: header must be file<TAB>caption")
    image_ids: list[str] = []
    index: dict[str, int] = {}
    captions, caption_image = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2:
            raise InputError(f"{table}:{number}: expected file<TAB>caption")
        if fields[0] not in index:
            if not (root / fields[0]).is_file():
                raise InputError(f"{table}:{number}: image {root / fields[0]} not found")
            index[fields[0]] = len(image_ids)
            image_ids.append(fields[0])
        captions.append(fields[1])
        caption_image.append(index[fields[0]])
    return CaptionedImages(root.name, image_ids, captions, caption_image,
                           lambda i: Image.open(root / image_ids[i]).convert("RGB"))


def load_toy_split(data: str | None = None, limit: int | None = None) -> CaptionedImages:
    """The toy data set's val split (``data``: toy cache root or val shard pattern), one caption each; by
    default the default set (seed 0, standard) whatever toy set a run trained on: the same items for every
    run, so the scores compare."""
    val = data if data is not None and ".tar" in data else toy_data.ensure_toy(data).val
    images: list[Image.Image] = []
    keys: list[str] = []
    captions: list[str] = []
    try:
        for batch_images, batch_captions, _classes, batch_keys in eval_loader(val, None, batch_size=256):
            images += batch_images
            captions += batch_captions
            keys += batch_keys
            if limit is not None and len(keys) >= limit:
                break
    except ShardSpecError as exc:
        raise InputError(f"--toy-root {val}: {exc}") from None
    images, keys, captions = images[:limit], keys[:limit], captions[:limit]
    return CaptionedImages("toy", keys, captions, list(range(len(keys))), images.__getitem__)


def write_coco_captions(annotations: str | Path, images: str | Path, out: str | Path) -> Path:
    """``out/captions.tsv`` from a COCO captions file (``captions_val2017.json``: images and their
    5 or so captions each), image paths relative to ``out``; nothing is copied. Returns the TSV's path."""
    annotations, images, out = Path(annotations), Path(images), Path(out)
    try:
        table = json.loads(annotations.read_text(encoding="utf-8"))
        files = {image["id"]: image["file_name"] for image in table["images"]}
        rows = [(files[note["image_id"]], " ".join(note["caption"].split())) for note in table["annotations"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--coco {annotations}: not a COCO captions file ({type(exc).__name__}: {exc}); "
                         "expected e.g. annotations/captions_val2017.json") from None
    missing = sorted({file for file, _ in rows if not (images / file).is_file()})
    if missing:
        raise InputError(f"--images {images}: {len(missing)} of the annotated images are missing, "
                         f"e.g. {missing[0]}")
    out.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(images.resolve(), out.resolve()))
    rows.sort(key=lambda row: row[0])  # image by image, in file order, as the shared subset is
    lines = ["file\tcaption", *(f"{(relative / file).as_posix()}\t{caption}" for file, caption in rows)]
    (out / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / "captions.tsv"


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m benchmarks.data.captions",
                           description="A captioned folder (captions.tsv) from COCO's release.")
    parser.add_argument("--coco", required=True, help="COCO captions JSON, e.g. captions_val2017.json")
    parser.add_argument("--images", required=True, help="the folder holding its images, e.g. val2017/")
    parser.add_argument("--out", required=True, help="folder to write captions.tsv into")
    args = parser.parse_args(argv)
    try:
        path = write_coco_captions(args.coco, args.images, args.out)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    data = load_caption_folder(path.parent)
    print(f"wrote {path}: {len(data.image_ids)} images, {len(data.captions)} captions; score it with "
          f"python -m benchmarks.retrieval --model RUN --data {path.parent}")


if __name__ == "__main__":
    run_main(main)
