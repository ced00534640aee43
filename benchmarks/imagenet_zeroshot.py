"""Zero-shot classification with open_clip's protocol: ImageNet-1k (or ImageNetV2), or the embedded toy set.

The classifier is open_clip's own ``build_zero_shot_classifier`` over OpenAI's 1000 ImageNet class names
and 80 templates (both shipped by open_clip), run through our Encoder and cached per model
(``benchmarks.zeroshot_classifier``). Images come from a folder in ILSVRC val layout
(``DIR/<wnid>/*.JPEG``; class index = ILSVRC index = sorted wnid order), a folder in ImageNetV2's
layout (``DIR/<class index>/*.jpeg``), or WebDataset shards with ``.cls`` (``benchmarks.data.imagenet``).
Metrics (percent): top-1, top-5, mean per-class recall, and a seeded bootstrap 95% CI of top-1.
Started by ``torchrun``/``accelerate launch``, every process scores its share and rank 0 reports the
same result a single process gets.

    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/imagenet/val
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data imagenetv2-matched-frequency
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/imagenet/val --every-checkpoint
    torchrun --nproc-per-node 8 -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/val
    python -m benchmarks.imagenet_zeroshot --open-clip ViT-B-32 --data ../shared/data/imagenet_samples
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-tiny --dataset toy
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from open_clip import IMAGENET_CLASSNAMES
from tqdm import tqdm

from benchmarks.data.files import InputError
from benchmarks.data.imagenet import IMAGEFOLDER_LAYOUT, imagefolder_batches, is_shard_spec, shard_batches
from benchmarks.encoder import Encoder
from benchmarks.process_group import gather_objects, join_launched_processes
from benchmarks.provenance import (
    add_model_arguments,
    add_output_arguments,
    data_label,
    encoder_from_args,
    fail,
    finish,
    limit_part,
)
from benchmarks.result_formats import write_clip_benchmark
from benchmarks.runner_flags import add_limit_argument, add_templates_argument
from benchmarks.zeroshot_classifier import TEMPLATE_SETS, zero_shot_classifier
from runfolder import RunFolder
from runfolder.errors import OneLineParser, run_main

BOOTSTRAP_RESAMPLES = 1000


# --- metrics -------------------------------------------------------------------------------------

def ranked_classes(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k class indices per row; ties go to the lower class index (stable sort), so a constant
    model always answers class 0 and scores exactly the share of class 0: chance on balanced data."""
    return torch.sort(logits.float(), dim=1, descending=True, stable=True)[1][:, :k]


def classification_metrics(ranked: torch.Tensor, targets: torch.Tensor, seed: int = 0,
                           resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """top1, top5, mean_per_class_recall, top1_ci95 (percentile bootstrap, seeded), n. Percent."""
    targets = targets.long().cpu()
    ranked = ranked.cpu()
    correct1 = (ranked[:, 0] == targets).numpy()
    correct5 = (ranked[:, :5] == targets[:, None]).any(dim=1).numpy()
    classes = np.unique(targets.numpy())
    recalls = [correct1[targets.numpy() == c].mean() for c in classes]
    rng = np.random.default_rng(seed)
    n = len(correct1)
    boot = np.array([correct1[rng.integers(0, n, n)].mean() for _ in range(resamples)]) * 100
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"top1": float(correct1.mean() * 100), "top5": float(correct5.mean() * 100),
            "mean_per_class_recall": float(np.mean(recalls) * 100), "top1_ci95": [float(low), float(high)],
            "n": int(n), "classes_present": int(len(classes))}


def attribute_accuracy(predicted: torch.Tensor, targets: torch.Tensor,
                       attributes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per attribute (e.g. colour, shape): % of images whose predicted class shares the true attribute."""
    names = sorted(attributes[0]) if attributes else []
    pairs = list(zip(predicted.tolist(), targets.tolist(), strict=True))
    return {f"{name}_acc": float(np.mean([attributes[p][name] == attributes[t][name] for p, t in pairs]))
            * 100 for name in names}


# --- the benchmark -------------------------------------------------------------------------------

def imagenet_batches(data: str | Path | None, preprocess, batch_size: int, workers: int, limit: int | None,
                     skipped: dict[str, int], rank: int = 0, world_size: int = 1,
                     ) -> tuple[Iterable, int | None]:
    """(batches of (images, labels, ids), image count or None) of this process's share of an ImageNet
    folder (ILSVRC val or ImageNetV2 layout) or `.cls` shards (their bad samples counted in `skipped`)."""
    if data is None:
        raise InputError(f"--data is required for ImageNet: {IMAGEFOLDER_LAYOUT} or shards")
    share = {"rank": rank, "world_size": world_size}
    if is_shard_spec(str(data)):
        return shard_batches(str(data), preprocess, batch_size, workers, limit, skipped, **share), None
    return imagefolder_batches(data, preprocess, batch_size, workers, limit, **share)


def ranked_predictions(encoder: Encoder, classifier: torch.Tensor, batches: Iterable, k: int,
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor], list]:
    """Scoring alone: each batch's top-k classes under `classifier` (D x classes), targets and ids."""
    ranked, targets, ids = [], [], []
    for images, labels, image_ids in batches:
        features = encoder.encode_image(images)
        ranked.append(ranked_classes(100.0 * features @ classifier, k).cpu())
        targets.append(torch.as_tensor(labels).long())
        ids.append(image_ids)
    return ranked, targets, ids


def zero_shot_eval(encoder: Encoder, dataset: str = "imagenet", data: str | Path | None = None,
                   batch_size: int = 64, workers: int = 0, limit: int | None = None,
                   templates: str = "openai", cache: bool | None = None, seed: int = 0,
                   progress: bool = True, keep_predictions: bool = False, rank: int = 0,
                   world_size: int = 1) -> dict[str, Any]:
    """Zero-shot accuracy of ``encoder`` (what ``python -m benchmarks.imagenet_zeroshot`` runs).

    dataset="imagenet": ``data`` is a folder in ILSVRC val layout or ImageNetV2's class-index layout, or
    a WebDataset shard spec with ``.cls``; classes/templates are open_clip's (``templates="openai"``:
    80, ``"simple"``: 7).
    dataset="toy": the embedded data set's val split (``data``: None for the default toy set, a cache
    root for ``toy_data.ensure_toy``, or the val shard pattern itself), scored by
    ``benchmarks.toy_zeroshot.toy_eval`` (seen and held-out classes, R@1, val loss; its docstring).

    Returns (percent): ``top1``, ``top5``, ``mean_per_class_recall`` (over the classes present in the
    data), ``top1_ci95`` ([low, high], bootstrap of top-1, ``BOOTSTRAP_RESAMPLES`` resamples, ``seed``),
    ``n``, ``classes_present``, ``num_classes``, ``templates``. ``limit`` evaluates at most that many
    images (folders: evenly spaced; shards: the first, or with several processes an equal part of each
    one's shards). ``cache`` (default: on for ImageNet, off for toy whose classifier is cheap and whose
    model changes during training) stores the classifier under $MIXCLIP_CACHE/zeroshot.
    ``keep_predictions`` adds ``predictions`` ({"ranked": top-k class ids per image, "targets"}).

    Distributed: every one of ``world_size`` processes calls this with its ``rank`` (and its own
    encoder); each builds its share of the classifier and scores its share of the images, two gathers
    (the classifier, the predictions) collect them, and every process returns the same result. On a
    folder the result equals the single-process one exactly. The model keeps its train/eval mode.
    """
    if encoder.preprocess is None:
        raise InputError(f"model {encoder.model_id} is text-only; zero-shot needs an image tower")
    if dataset == "toy":  # its own score: seen / held-out classes, R@1, val loss (benchmarks.toy_zeroshot)
        from benchmarks.toy_zeroshot import toy_eval

        return toy_eval(encoder, data, batch_size, workers, limit, seed=seed, progress=progress,
                        keep_predictions=keep_predictions, rank=rank, world_size=world_size)
    skipped: dict[str, int] = {}
    share = {"rank": rank, "world_size": world_size}
    if dataset == "imagenet":
        classnames, template_list = list(IMAGENET_CLASSNAMES), list(TEMPLATE_SETS[templates])
        batches, total = imagenet_batches(data, encoder.preprocess, batch_size, workers, limit, skipped,
                                          **share)
    else:
        raise InputError(f"--dataset {dataset}: expected imagenet or toy")
    use_cache = True if cache is None else cache
    classifier = zero_shot_classifier(encoder, classnames, template_list, cache=use_cache,
                                      progress=progress and rank == 0, **share)

    k = min(5, len(classnames))
    steps = None if total is None else -(-total // batch_size)
    shown = tqdm(batches, total=steps, desc=f"zero-shot {dataset}", unit="batch",
                 disable=not progress or rank != 0)
    ranked, targets, ids = ranked_predictions(encoder, classifier, shown, k)
    ranked_all, targets_all = _gathered_predictions(ranked, targets, ids, skipped, k, world_size)
    if not len(targets_all):
        raise InputError(f"--data {data}: no images found")
    if int(targets_all.max()) >= len(classnames) or int(targets_all.min()) < 0:
        raise InputError(f"--data {data}: class index {int(targets_all.max())} outside the "
                         f"{len(classnames)} classes")
    result = classification_metrics(ranked_all, targets_all, seed=seed)
    result.update(num_classes=len(classnames), templates=templates, num_templates=len(template_list),
                  dataset=dataset)
    if world_size > 1:
        result["processes"] = world_size
    if skipped:
        result["skipped"] = dict(skipped)
    if keep_predictions:
        result["predictions"] = {"ranked": ranked_all.tolist(), "targets": targets_all.tolist()}
    return result


def _gathered_predictions(ranked: list[torch.Tensor], targets: list[torch.Tensor], ids: list, skipped: dict,
                          k: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's (ranked, targets) in the single-process order (by image id where the data has
    ids, else rank by rank); ``skipped`` becomes the sum over processes. One gather."""
    mine = (torch.cat(ranked) if ranked else torch.empty(0, k, dtype=torch.long),
            torch.cat(targets) if targets else torch.empty(0, dtype=torch.long),
            None if any(i is None for i in ids) else torch.cat([torch.as_tensor(i) for i in ids] or
                                                                [torch.empty(0, dtype=torch.long)]),
            dict(skipped))
    shares = gather_objects(mine, world_size)
    ranked_all = torch.cat([share[0] for share in shares])
    targets_all = torch.cat([share[1] for share in shares])
    if all(share[2] is not None for share in shares) and world_size > 1:
        order = torch.argsort(torch.cat([share[2] for share in shares]))
        ranked_all, targets_all = ranked_all[order], targets_all[order]
    skipped.clear()
    for share in shares:
        for kind, n in share[3].items():
            skipped[kind] = skipped.get(kind, 0) + n
    return ranked_all, targets_all


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.imagenet_zeroshot",
                           description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, text_only_ok=False)
    parser.add_argument("--dataset", choices=("imagenet", "toy"), default="imagenet",
                        help="ImageNet-1k classes, or the embedded toy data set's val split "
                             "(default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help=f"imagenet: {IMAGEFOLDER_LAYOUT}, or WebDataset shards with .cls "
                             "(e.g. 'val/{00000..00063}.tar'); toy: cache root or val shards "
                             "(default: the toy cache)")
    from benchmarks.toy_zeroshot import add_toy_arguments  # toy_zeroshot imports this module

    add_toy_arguments(parser)
    parser.add_argument("--imagenet-val", metavar="PATH", default=None,
                        help="open_clip_train's flag, as training takes it: --dataset imagenet --data PATH")
    add_templates_argument(parser)
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0,
                        help="data loader worker processes (default: %(default)s)")
    add_limit_argument(parser, "images")
    parser.add_argument("--no-cache", action="store_true", help="rebuild the classifier, do not cache it")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    parser.add_argument("--every-checkpoint", action="store_true",
                        help="with --model RUN_DIR: score every saved step (RUN/checkpoints/step_*.pt), "
                             "one result per step (a curve from a finished run)")
    add_output_arguments(parser)
    return parser


def run_checkpoints(run_dir: str) -> list[Path]:
    """Every saved step of a run (``RUN/checkpoints/step_*.pt``), oldest first."""
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise InputError(f"--model {run_dir}: --every-checkpoint needs a run dir (RUN/checkpoints/step_*.pt)")
    found = [path for _, path in reversed(run.step_files())]
    if not found:
        raise InputError(f"--model {run_dir}: no checkpoints in {run.checkpoints} (expected step_*.pt)")
    return found


def _score(args: argparse.Namespace, rank: int, world_size: int) -> tuple[Encoder, dict[str, Any]]:
    encoder = encoder_from_args(args)
    try:
        result = zero_shot_eval(encoder, args.dataset, args.data, args.batch_size, args.workers, args.limit,
                                templates=args.templates, cache=False if args.no_cache else None,
                                seed=args.seed, progress=not args.every_checkpoint, rank=rank,
                                world_size=world_size)
    except InputError as exc:
        fail(str(exc))
    return encoder, result


EVAL_SETS = ("toy", "imagenet")  # what --dataset and training's --evals name


def eval_set(name: str, data: str | None, templates: str = "openai", workers: int = 0) -> dict[str, Any]:
    """`zero_shot_eval`'s arguments for the set `name` at `data`, checked now (one-line InputError):
    the runner's --dataset/--data and training's --evals/--imagenet-val both resolve through here."""
    if name not in EVAL_SETS:
        raise InputError(f"{name!r}: not a zero-shot set; expected one of {', '.join(EVAL_SETS)}")
    if name == "toy":
        return {"dataset": "toy", "data": data}
    if data is None:
        raise InputError(f"imagenet needs its data: {IMAGEFOLDER_LAYOUT}, or WebDataset shards with .cls")
    if not is_shard_spec(data) and not Path(data).is_dir():
        raise InputError(f"{data}: no such directory; expected {IMAGEFOLDER_LAYOUT} "
                         "or WebDataset shards with .cls")
    return {"dataset": "imagenet", "data": data, "templates": templates, "workers": workers}


def result_name_parts(args: argparse.Namespace) -> list[str | None]:
    """What sets this measurement apart in its file name: the ImageNet data (val, V2, samples...) or
    a toy folder other than the cache, a template set other than openai, --limit."""
    data = data_label(args.data, "imagenet") if args.dataset == "imagenet" or args.data else None
    templates = f"templates-{args.templates}" if args.templates != "openai" else None
    return [data, templates, limit_part(args.limit)]


def main(argv: list[str] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """One model's result record; with --every-checkpoint, one record per saved step (oldest first).
    Under ``torchrun``/``accelerate launch`` every process scores its share and rank 0 reports."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.imagenet_val is not None:  # open_clip's spelling of --dataset imagenet --data PATH
        if args.dataset != "imagenet" or args.data not in (None, args.imagenet_val):
            fail(f"--imagenet-val {args.imagenet_val} is --dataset imagenet --data {args.imagenet_val}; "
                 "give one or the other")
        args.data = args.imagenet_val
    if args.dataset == "imagenet" and args.data is None:
        fail(f"--data (or --imagenet-val) is required with --dataset imagenet: {IMAGEFOLDER_LAYOUT} or "
             "shards (docs/data.md#imagenet-val); --dataset toy needs none")
    try:
        eval_set(args.dataset, args.data)
    except InputError as exc:
        fail(f"--data {args.data}: {exc}")
    if args.dataset == "toy":  # the run's own toy set (its recipe), or the one --toy-seed/--toy-task name
        from benchmarks.toy_zeroshot import runner_toy_data

        try:
            args.data = runner_toy_data(args.model, args.data, args.toy_seed, args.toy_task)
        except InputError as exc:
            fail(str(exc))
    elif args.toy_seed is not None or args.toy_task is not None:
        fail("--toy-seed/--toy-task name a toy set: give them with --dataset toy")
    if args.every_checkpoint and (args.model is None or args.model_id is not None):
        fail("--every-checkpoint scores a run's saved steps: give --model RUN_DIR (and no --model-id)")
    rank, world_size, device = join_launched_processes()
    args.device = args.device or device
    try:
        models = [str(path) for path in run_checkpoints(args.model)] if args.every_checkpoint else [None]
    except InputError as exc:
        fail(str(exc))
    settings = {"dataset": args.dataset, "data": args.data, "templates": args.templates, "limit": args.limit,
                "seed": args.seed}
    # toy results get their own folder so they never overwrite a model's ImageNet result
    benchmark = "imagenet_zeroshot" if args.dataset == "imagenet" else "toy_zeroshot"
    name_parts = result_name_parts(args)
    records, run_name = [], Path(args.model).resolve().name if args.every_checkpoint else None
    for model in models:
        if model is not None:  # one result file per step, named after the run whatever its folder holds
            args.model, args.model_id = model, f"{run_name}-{Path(model).stem}"
        encoder, result = _score(args, rank, world_size)
        if rank != 0:
            records.append({"metrics": result})
            continue
        low, high = result["top1_ci95"]
        step = f"step {encoder.info['step']}  " if args.every_checkpoint else ""
        print(f"{step}{args.dataset} zero-shot  n={result['n']}  top1 {result['top1']:.2f} "
              f"(95% CI {low:.2f}-{high:.2f})  top5 {result['top5']:.2f}  "
              f"mean per-class recall {result['mean_per_class_recall']:.2f}")
        if args.dataset == "toy":
            from benchmarks.toy_zeroshot import summary_line

            print(summary_line(result))
        records.append(finish(benchmark, result, args, encoder=encoder, settings=settings,
                              name_parts=name_parts, anchor_writer=write_clip_benchmark))
    return records if args.every_checkpoint else records[0]


if __name__ == "__main__":
    run_main(main)
