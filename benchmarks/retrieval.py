"""Image-text retrieval: image->text and text->image recall@1/5/10, and a picture of what a query finds.

Data: a captioned folder (``DIR/captions.tsv`` with ``file<TAB>caption`` rows, ``file`` relative to DIR,
several captions per image; default: the shared COCO subset ``captions/``) or the toy data set's val
split (``--dataset toy``). An image query hits when any of its captions is in the top k; a text query hits
when an image carrying that exact caption is in the top k (with unique captions: its own image, the
standard COCO/Flickr protocol). Ties rank by data order (stable sort).

    python -m benchmarks.retrieval --model runs/mixer-tiny --dataset toy
    python -m benchmarks.retrieval --open-clip ViT-B-32 --query "a red circle" --grid-out grid.png
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.data.captions import (
    CAPTIONS_HOWTO,
    CAPTIONS_LAYOUT,
    CaptionedImages,
    load_caption_folder,
    load_toy_split,
)
from benchmarks.data.files import InputError, shared_data_dir
from benchmarks.encoder import Encoder
from benchmarks.provenance import (
    add_model_arguments,
    add_output_arguments,
    data_label,
    encoder_from_args,
    fail,
    finish,
    limit_part,
    safe_model_id,
)
from benchmarks.result_formats import write_clip_benchmark
from benchmarks.runner_flags import add_deprecated_alias, add_limit_argument
from runfolder.errors import OneLineParser, run_main

KS = (1, 5, 10)


def positives(data: CaptionedImages) -> np.ndarray:
    """(texts, images) bool: image i is a right answer for caption t if it carries that exact caption."""
    by_text: dict[str, set[int]] = {}
    for caption, image in zip(data.captions, data.caption_image, strict=True):
        by_text.setdefault(caption, set()).add(image)
    matrix = np.zeros((len(data.captions), len(data.image_ids)), dtype=bool)
    for t, caption in enumerate(data.captions):
        matrix[t, sorted(by_text[caption])] = True
    return matrix


def recall_at_k(similarity: torch.Tensor, positive: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k (percent) both ways from an (images, texts) similarity and a (texts, images) truth."""
    similarity = similarity.float().cpu()
    truth = torch.from_numpy(positive)
    result = {}
    for direction, scores, hits in (("i2t", similarity, truth.t()), ("t2i", similarity.t(), truth)):
        order = torch.sort(scores, dim=1, descending=True, stable=True)[1]
        ranked_hits = torch.gather(hits, 1, order)  # row q: is the j-th ranked candidate right?
        first_hit = torch.where(ranked_hits.any(1), ranked_hits.float().argmax(1), scores.shape[1])
        for k in ks:
            result[f"{direction}_R@{k}"] = float((first_hit < k).float().mean() * 100)
    return result


def encode_images(encoder: Encoder, data: CaptionedImages, batch_size: int) -> torch.Tensor:
    features = []
    for start in tqdm(range(0, len(data.image_ids), batch_size), desc=f"{data.name} images", unit="batch"):
        rows = range(start, min(start + batch_size, len(data.image_ids)))
        features.append(encoder.encode_image(torch.stack([encoder.preprocess(data.open_image(i))
                                                          for i in rows])).cpu())
    return torch.cat(features)


def encode_texts(encoder: Encoder, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    return torch.cat([encoder.encode_text(texts[start:start + batch_size]).cpu()
                      for start in tqdm(range(0, len(texts), batch_size), desc="captions", unit="batch")])


def retrieval_eval(encoder: Encoder, data: CaptionedImages, batch_size: int = 64
                   ) -> tuple[dict[str, Any], torch.Tensor]:
    """(metrics, image features): recall@1/5/10 both ways, plus counts."""
    if encoder.preprocess is None:
        raise InputError(f"model {encoder.model_id} is text-only; retrieval needs an image tower")
    image_features = encode_images(encoder, data, batch_size)
    text_features = encode_texts(encoder, data.captions, batch_size)
    metrics = recall_at_k(image_features @ text_features.t(), positives(data))
    metrics.update(images=len(data.image_ids), texts=len(data.captions), data=data.name)
    return metrics, image_features


def query_grid(encoder: Encoder, data: CaptionedImages, image_features: torch.Tensor, query: str,
               out: str | Path, top: int = 9) -> list[tuple[str, float]]:
    """Save a 3x3 grid of the ``top`` images closest to ``query`` with their cosine scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = (image_features @ encoder.encode_text([query]).cpu().t()).squeeze(1)
    order = torch.sort(scores, descending=True, stable=True)[1][:top].tolist()
    columns = 3
    rows = -(-len(order) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows + 0.4), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for rank, (axis, i) in enumerate(zip(axes.flat, order, strict=False), start=1):
        axis.imshow(data.open_image(i))
        axis.set_title(f"#{rank}  cos {scores[i]:.3f}\n{textwrap.shorten(data.image_ids[i], 34)}", fontsize=9)
    figure.suptitle(f"{encoder.model_id}: top {len(order)} images for {query!r}", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))  # keep the row titles clear of the suptitle
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return [(data.image_ids[i], float(scores[i])) for i in order]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.retrieval",
                           description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, text_only_ok=False)
    parser.add_argument("--dataset", choices=("captions", "toy"), default="captions",
                        help="a captioned image folder, or the toy val split (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help=f"captions: {CAPTIONS_LAYOUT} (default: <shared data>/captions); toy: cache "
                             "root or val shard pattern (default: the toy cache)")
    add_deprecated_alias(parser, "--toy-root", "--data")
    add_limit_argument(parser, "toy val images")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images/captions per encoder call (default: %(default)s)")
    parser.add_argument("--query", default=None, help="also save a grid of the top-9 images for this text")
    parser.add_argument("--grid-out", type=Path, default=None,
                        help="PNG path for --query (default: RESULTS_DIR/retrieval/<model-id>_<query>.png)")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data == "toy":  # the old spelling of --dataset toy
        print("warning: --data toy is deprecated; use --dataset toy", file=sys.stderr)
        args.dataset, args.data = "toy", None
    toy = args.dataset == "toy"
    data_arg = args.data or (None if toy else str(shared_data_dir() / "captions"))
    if not toy and args.data is None and not (Path(data_arg) / "captions.tsv").is_file():
        fail(f"no captioned images given and no shared copy at {data_arg}: give --data DIR "
             f"({CAPTIONS_LAYOUT}; {CAPTIONS_HOWTO}), --dataset toy, or score COCO/Flickr through "
             "CLIP_benchmark: python -m benchmarks.clip_benchmark eval --model RUN --dataset mscoco_captions")
    if not toy and not (Path(data_arg) / "captions.tsv").is_file():
        fail(f"--data {data_arg}: no captions.tsv; expected {CAPTIONS_LAYOUT}, or --dataset toy")
    encoder = encoder_from_args(args)
    try:
        if toy:
            data = load_toy_split(data_arg, args.limit)
        else:
            data = load_caption_folder(data_arg)
        metrics, image_features = retrieval_eval(encoder, data, args.batch_size)
    except InputError as exc:
        fail(str(exc))
    print(f"{data.name}: {metrics['images']} images, {metrics['texts']} captions")
    print("  ".join(f"{name} {value:.2f}" for name, value in metrics.items() if "@" in name))
    if args.query:
        out = args.grid_out or (args.results_dir / "retrieval" /
                                f"{safe_model_id(encoder.model_id)}_{safe_model_id(args.query)}.png")
        metrics["query"] = {"text": args.query, "grid": str(out),
                            "top": query_grid(encoder, data, image_features, args.query, out)}
        print(f"query {args.query!r}: grid saved to {out}")
    settings = {"dataset": args.dataset, "data": data_arg or "toy", "limit": args.limit, "query": args.query}
    # the default measurement (the shared COCO captions) keeps the bare name; other data is named
    name_parts = ["toy" if toy else (data_label(args.data, "captions") if args.data else None),
                  limit_part(args.limit)]
    return finish("retrieval", metrics, args, encoder=encoder, settings=settings, name_parts=name_parts,
                  anchor_writer=write_clip_benchmark)


if __name__ == "__main__":
    run_main(main)
