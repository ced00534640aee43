"""Published results of open CLIP-family training runs, as data: the schema, the loader, the curves.

    python -m results.published build ../shared/data/published   # rewrite the packaged table from its source
    python -m results.published show --family clip --model ViT-B-32 --dataset datacomp_1b

A published-results table is a CSV with one header line and these columns (no quoting needed):

| column | meaning |
|---|---|
| family | training objective: clip, siglip, mammut, coca |
| model | open_clip architecture name, e.g. ViT-B-32 |
| dataset | pre-training data: datacomp_1b, relaion2b-en, datacomp_pool_<filter> (DataComp small/medium) |
| schedule | learning-rate schedule: cosine or const (constant with cooldown) |
| samples_seen | training samples seen, an integer |
| benchmark, metric | e.g. imagenet1k / acc1 (zero-shot top-1) |
| value | the metric in percent (53.1 = 53.1%) |
| source | a key of SOURCES: where the number was published |
| gflops_per_sample | forward GFLOPs per sample (image + text), as the source counts them; may be empty |

The packaged table (`results/published/published_results.csv`, provenance in its README) holds the
ImageNet zero-shot rows of Nezhurina et al. 2025 and DataComp's small/medium ViT-B/32 numbers; its
source files live in `../shared/data/published/`, which `build` reads and tests compare it with.
Reads files only (csv, numpy); no model code.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

from runfolder.errors import OneLineParser, ReportInputError, run_main
from runfolder.published_table import (  # noqa: F401 - re-exported: the table's format lives there
    COLUMNS,
    PACKAGED,
    SOURCES,
    TRAIN_PER_FORWARD,
    Row,
    curve,
    load_table,
    select,
    value_at,
)

# DataComp small (12.8M samples seen) and medium (128M) ViT-B/32 ImageNet zero-shot top-1, per filter of the
# pool (docs/results/published.md quotes the same table); each pool is as large as its scale's samples seen.
DATACOMP_B32 = {"none": (2.5, 17.6), "basic": (3.0, 22.6), "text": (4.6, 25.5), "image": (4.3, 26.8),
                "laion2b": (3.1, 23.0), "clip_score": (5.1, 27.3), "image_clip_score": (3.9, 29.7)}
DATACOMP_SAMPLES = (12_800_000, 128_000_000)
B32_FORWARD_GFLOPS = 14.54  # open_clip ViT-B-32, as nezhurina2025_model_profile.csv counts it


# ----- building the packaged table from its source files ------------------------------------------------


def _profile_key(family: str, model: str) -> str:
    """nezhurina2025_model_profile.csv names a family's architecture by a prefix or suffix of the model."""
    names = {"mammut": f"mammut_{model}", "coca": f"coca_{model}", "siglip": f"{model}-SigLIP"}
    return names.get(family, model)


def from_nezhurina(results_csv: Path, profile_csv: Path, benchmark: str | None = "imagenet1k") -> list[Row]:
    """The paper's table in this schema (value as a percent, its forward GFLOPs per sample attached)."""
    with profile_csv.open(newline="") as handle:
        gflops = {r["model"]: float(r["gflops"]) for r in csv.DictReader(handle)}
    rows = []
    with results_csv.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            if benchmark and raw["benchmark"] != benchmark:
                continue
            rows.append(Row(raw["family"], raw["model"], raw["pretrain_dataset"], raw["lr_scheduler"],
                            int(raw["samples_seen"]), raw["benchmark"], raw["metric"],
                            round(100 * float(raw["value"]), 1), "nezhurina2025",
                            gflops.get(_profile_key(raw["family"], raw["model"]))))
    return rows


def datacomp_rows() -> list[Row]:
    return [Row("clip", "ViT-B-32", f"datacomp_pool_{name}", "cosine", samples, "imagenet1k", "acc1", value,
                "gadre2023", B32_FORWARD_GFLOPS)
            for name, values in DATACOMP_B32.items()
            for samples, value in zip(DATACOMP_SAMPLES, values, strict=True)]


def write_table(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.family, r.model, r.dataset, r.schedule, r.samples_seen, r.benchmark, r.metric,
                             f"{r.value:g}", r.source, "" if r.gflops_per_sample is None else
                             f"{r.gflops_per_sample:g}"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(source: Path, out: Path = PACKAGED) -> list[Row]:
    """The packaged table: the paper's ImageNet rows, then DataComp's; prints the sources' SHA256."""
    results, profile = source / "nezhurina2025_results.csv", source / "nezhurina2025_model_profile.csv"
    for file in (results, profile):
        if not file.is_file():
            raise ReportInputError(f"{file}: missing; expected the shared published/ folder")
    rows = from_nezhurina(results, profile) + datacomp_rows()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(rows, out)
    for file in (results, profile):
        print(f"{file.name} sha256 {sha256(file)}")
    print(f"wrote {out}: {len(rows)} rows")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m results.published", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="rewrite the packaged table from the shared source folder")
    make.add_argument("source", type=Path)
    make.add_argument("--out", type=Path, default=PACKAGED)
    show = sub.add_parser("show", help="print one published curve")
    show.add_argument("--table", type=Path, default=PACKAGED)
    for name in ("family", "model", "dataset"):
        show.add_argument(f"--{name}", required=True)
    show.add_argument("--schedule", default="cosine")
    show.add_argument("--benchmark", default="imagenet1k")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.source, args.out)
            return 0
        rows = select(load_table(args.table), family=args.family, model=args.model, dataset=args.dataset,
                      schedule=args.schedule, benchmark=args.benchmark)
    except ReportInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.table}: no rows for {args.family} {args.model} on {args.dataset}",
              file=sys.stderr)
        return 2
    for samples, value in zip(*curve(rows), strict=True):
        print(f"{samples:>14,.0f}  {value:5.1f}%")
    return 0


if __name__ == "__main__":
    run_main(main)
