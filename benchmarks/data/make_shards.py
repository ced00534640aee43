"""Write your own image/caption pairs as WebDataset shards in the img2dataset layout.

    python -m benchmarks.data.make_shards --images DIR --captions FILE.tsv --out DIR [--shard-size N]

FILE.tsv has one sample per line: `image path<TAB>caption`, the path relative to --images (or
absolute), optionally a third column `class` (an integer, written as KEY.cls for zero-shot shards).
A first line `file<TAB>caption[<TAB>class]` (or image/filename/path, text) is a header and skipped.
An image may appear on several lines (one sample per caption). The image bytes are copied unchanged
(.jpg/.jpeg/.png/.webp). Every row is checked before anything is written: a malformed row or a
missing image stops with one line naming the row.

Output: OUT/00000.tar, OUT/00001.tar, ... (webdataset's ShardWriter), samples `KEY.jpg|png|webp`,
`KEY.txt`, `KEY.json` ({"key", "caption", "source"}) [+ `KEY.cls`], keys numbered like img2dataset
(shard number then index in shard). Train on them with `--train-data 'OUT/{00000..0000N}.tar'`
(printed at the end) or simply `--train-data OUT`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

from runfolder.errors import InputError, OneLineParser, run_main

SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
HEADER_FIELDS = ({"file", "filename", "image", "path"}, {"caption", "text"}, {"class", "label", "cls"})


class Row(NamedTuple):
    line: int
    image: Path
    caption: str
    cls: int | None


def read_rows(captions: Path, images: Path) -> list[Row]:
    """Parse and check the TSV (fields, caption, class, image exists) before anything is written."""
    try:
        text = captions.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--captions {captions}: cannot read as UTF-8 text ({type(exc).__name__})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{captions}:{number}"
        if number == 1 and len(fields) in (2, 3) and all(
                f.strip().lower() in names for f, names in zip(fields, HEADER_FIELDS, strict=False)):
            continue  # header
        if len(fields) not in (2, 3):
            raise InputError(f"{where}: expected 2 or 3 tab-separated fields (image, caption[, class]), "
                             f"got {len(fields)}")
        name, caption = fields[0].strip(), fields[1].strip()
        if not name or not caption:
            raise InputError(f"{where}: empty {'image path' if not name else 'caption'}")
        cls = None
        if len(fields) == 3:
            try:
                cls = int(fields[2])
            except ValueError:
                raise InputError(f"{where}: class {fields[2]!r} is not an integer") from None
        path = images / name
        suffix = SUFFIXES.get(path.suffix.lower())
        if suffix is None:
            raise InputError(f"{where}: {name}: unsupported image type (expected .jpg, .jpeg, .png, .webp)")
        if not path.is_file():
            raise InputError(f"{where}: image not found: {path}")
        rows.append(Row(number, path, caption, cls))
    if not rows:
        raise InputError(f"--captions {captions}: no rows")
    return rows


def write_shards(rows: list[Row], out: Path, shard_size: int, progress: bool = True) -> list[Path]:
    """Write rows as shards OUT/%05d.tar; returns the shard paths."""
    import webdataset as wds
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    digits = len(str(shard_size - 1))
    pattern = str(out).replace("%", "%%") + "/%05d.tar"  # ShardWriter %-formats the pattern
    written: list[Path] = []
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0,
                         post=lambda name: written.append(Path(name))) as sink:
        for i, row in enumerate(tqdm(rows, desc="samples", unit="sample", disable=not progress)):
            key = f"{i // shard_size:05d}{i % shard_size:0{digits}d}"
            sample = {"__key__": key, SUFFIXES[row.image.suffix.lower()]: row.image.read_bytes(),
                      "txt": row.caption,
                      "json": json.dumps({"key": key, "caption": row.caption, "source": str(row.image)})}
            if row.cls is not None:
                sample["cls"] = str(row.cls)
            sink.write(sample)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m benchmarks.data.make_shards",
                           description="Write image/caption pairs as img2dataset-layout shards.")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder the TSV's image paths are relative to")
    parser.add_argument("--captions", required=True, type=Path,
                        help="TSV: image path<TAB>caption[<TAB>class], optional header line")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must hold no .tar yet)")
    parser.add_argument("--shard-size", type=int, default=10_000, help="samples per shard (default 10000)")
    args = parser.parse_args(argv)
    if not 1 <= args.shard_size <= 1_000_000:
        parser.error("--shard-size must be in 1..1000000")
    if not args.images.is_dir():
        parser.error(f"--images {args.images}: not a folder")
    if args.out.is_dir() and any(args.out.glob("*.tar")):
        parser.error(f"--out {args.out}: already holds .tar files; choose an empty folder")
    try:
        rows = read_rows(args.captions, args.images)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    shards = write_shards(rows, args.out, args.shard_size)
    spec = str(args.out / f"{{00000..{len(shards) - 1:05d}}}.tar") if len(shards) > 1 else str(shards[0])
    print(f"wrote {len(rows)} samples in {len(shards)} shard(s); train with --train-data '{spec}'")


if __name__ == "__main__":
    run_main(main)
