"""Zero-shot classification runner with open_clip's protocol: ImageNet-1k (or ImageNetV2), or the embedded
toy set, one result file per model (or per saved step with --every-checkpoint).

The set named by --dataset is scored through the registry of evaluations (``benchmarks.evaluations``),
the code training's in-training evaluation runs too: ImageNet by ``benchmarks.imagenet_scorer`` (open_clip's
class names and templates; an ILSVRC val or ImageNetV2 folder, or WebDataset shards with ``.cls``), the
toy set by ``benchmarks.toy_zeroshot``. Metrics (percent, ``benchmarks.classification_metrics``): top-1,
top-5, mean per-class recall, and a seeded bootstrap 95% CI of top-1. Started by
``torchrun``/``accelerate launch``, every process scores its share and rank 0 reports the same result a
single process gets.

    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/imagenet/val
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data imagenetv2-matched-frequency
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/imagenet/val --every-checkpoint
    torchrun --nproc-per-node 8 -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/val
    python -m benchmarks.imagenet_zeroshot --open-clip ViT-B-32 --data ../shared/data/imagenet_samples
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-tiny --dataset toy
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.data.files import InputError
from benchmarks.data.imagenet import IMAGEFOLDER_LAYOUT
from benchmarks.encoder import Encoder
from benchmarks.evaluations import EVAL_SETS, EVALUATIONS, eval_set, zero_shot_eval
from benchmarks.process_group import join_launched_processes
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
from benchmarks.toy_zeroshot import add_toy_arguments, runner_toy_data, summary_line
from runfolder import RunFolder
from runfolder.errors import OneLineParser, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.imagenet_zeroshot",
                           description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, text_only_ok=False)
    parser.add_argument("--dataset", choices=sorted(EVAL_SETS), default="imagenet",
                        help="ImageNet-1k classes, or the embedded toy data set's val split "
                             "(default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help=f"imagenet: {IMAGEFOLDER_LAYOUT}, or WebDataset shards with .cls "
                             "(e.g. 'val/{00000..00063}.tar'); toy: cache root or val shards "
                             "(default: the toy cache)")
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
    benchmark = EVALUATIONS[args.dataset].benchmark
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
            print(summary_line(result))
        records.append(finish(benchmark, result, args, encoder=encoder, settings=settings,
                              name_parts=name_parts, anchor_writer=write_clip_benchmark))
    return records if args.every_checkpoint else records[0]


if __name__ == "__main__":
    run_main(main)
