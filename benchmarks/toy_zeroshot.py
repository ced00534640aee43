"""The toy set's score: zero-shot top-1 on seen and held-out colour x shape classes, retrieval R@1 over the
val captions both ways, and the val contrastive loss, from one pass over the val split.

Zero-shot classifies every val image among all 64 classes with prompts made of trained tokens only
(`toy.TOY_TEMPLATES`) and reports top-1 on the 48 seen classes (`top1_seen`, the headline) and on the 16
held-out classes whose combination was never trained (`top1_held_out`: does the tower compose?), each with
a seeded bootstrap 95% CI, plus colour / shape accuracy and `robust_top1` with version 4's prompts (tokens
no caption has). R@1 and the val loss are in-distribution and continuous: image->text R@1 asks whether an
image's nearest val caption is its own (identical caption strings count as one), text->image R@1 whether a
caption's nearest image is one it describes; `val_loss` is the training loss (symmetric InfoNCE at the
model's clamped temperature) over consecutive val batches of `VAL_LOSS_BATCH` pairs, in key order.

The held-out classes are the scored set's own, read from its folder (classes.tsv, manifest.json): a toy
set of another seed holds out another square. The runner scores a run on the toy set its recipe trained
on (config.json's toy_seed, toy_task); --toy-seed / --toy-task name the set for a model without a run.

Called by `benchmarks.imagenet_zeroshot --dataset toy` and by the trainer's in-training evaluation; with
`world_size` processes each encodes its share and one gather joins them, so every process returns the
single-process result.

    python -m benchmarks.imagenet_zeroshot --model runs/mixer-w96-seed0 --dataset toy
    python -m benchmarks.imagenet_zeroshot --model mixer-tiny --dataset toy --toy-seed 1 --toy-task hard
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.classification_metrics import attribute_accuracy, classification_metrics, ranked_classes
from benchmarks.data import toy as toy_data
from benchmarks.data.files import InputError
from benchmarks.data.imagenet import is_shard_spec
from benchmarks.data.shards import EvalLoader, ShardSpecError, eval_dataset, expand_shards
from benchmarks.encoder import Encoder
from benchmarks.process_group import gather_objects
from benchmarks.zeroshot_classifier import zero_shot_classifier
from runfolder import RunFolder
from runfolder.vocabulary import MAX_LOGIT_SCALE, TOY_TASKS

VAL_LOSS_BATCH = 64  # fixed, not the recipe's batch: runs of other batches compare (chance ln 64)


@dataclass(frozen=True)
class ToyValSet:
    """The val shards to score and what their set records about itself."""

    val: str
    manifest_sha256: str
    seed: int
    task: str
    held_out_classes: tuple[int, ...]


def toy_val_spec(data: str | Path | None, toy_seed: int | None = None,
                 toy_task: str | None = None) -> ToyValSet:
    """The val split of the toy set to score. `data`: None (the cache's set of `toy_seed` and `toy_task`,
    default 0 and standard, generated on first use), a cache root (the same, there), or the val shards of
    a generated set, whose seed, task and held-out classes are read from the folder above them; a
    `toy_seed` / `toy_task` given must then be the set's (InputError otherwise)."""
    if data is None or not is_shard_spec(str(data)):
        toy = toy_data.ensure_toy(data, 0 if toy_seed is None else toy_seed, task=toy_task or "standard")
        return ToyValSet(toy.val, toy.manifest_sha256, toy.seed, toy.task, toy.held_out_classes)
    try:
        root = Path(expand_shards(str(data))[0]).parent.parent
        recorded = toy_data.read_toy_set(root)
    except (ShardSpecError, ValueError) as exc:
        raise InputError(f"--data {data}: expected the val shards of a generated toy set ({exc})") from None
    for name, asked in (("seed", toy_seed), ("task", toy_task)):
        if asked is not None and asked != recorded[name]:
            raise InputError(f"--data {data}: the toy set of {name} {recorded[name]}, not of the {name} "
                             f"{asked} asked for (--toy-{name}, or the run's recipe)")
    return ToyValSet(str(data), recorded["manifest_sha256"], recorded["seed"], recorded["task"],
                     recorded["held_out_classes"])


def add_toy_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's flags naming the toy set of a model that is not a run (a run's recipe names its own)."""
    parser.add_argument("--toy-seed", type=int, default=None,
                        help="--dataset toy: the toy set's seed (default: a run's recipe toy_seed, else 0)")
    parser.add_argument("--toy-task", choices=TOY_TASKS, default=None,
                        help="--dataset toy: the toy set's task (default: a run's recipe toy_task, else "
                             "standard)")


def run_toy_set(model: str | None) -> tuple[int, str] | None:
    """(toy_seed, toy_task) of the recipe that trained `model` (a run dir, or a checkpoint inside one;
    a run from before these fields trained on seed 0, standard), or None for a model without a run."""
    if model is None:
        return None
    path = Path(model)
    run = RunFolder(path) if path.is_dir() else RunFolder.of_checkpoint(path) if path.is_file() else None
    if run is None or not run.is_run():
        return None
    try:
        recipe = run.read_config()["experiment"]["recipe"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--model {model}: cannot read its recipe from {run.config} ({exc})") from None
    return int(recipe.get("toy_seed", 0)), recipe.get("toy_task", "standard")


def runner_toy_data(model: str | None, data: str | None, toy_seed: int | None,
                    toy_task: str | None) -> str | None:
    """The runner's --data for --dataset toy: the val shards of the set the run trained on or the flags name
    (checked against each other and against --data's set); None, as given, for the default set of a model
    without a run, so that result keeps its file name."""
    trained = run_toy_set(model)
    if trained is not None:
        for name, flag, value in (("seed", toy_seed, trained[0]), ("task", toy_task, trained[1])):
            if flag is not None and flag != value:
                raise InputError(f"--toy-{name} {flag}: --model {model} trained on the toy set of {name} "
                                 f"{value} (its config.json); leave the flag out")
        toy_seed, toy_task = trained
    if toy_seed is not None and toy_seed < 0:
        raise InputError(f"--toy-seed {toy_seed}: expected a seed >= 0")
    if data is None and (toy_seed or 0, toy_task or "standard") == (0, "standard"):
        return None
    return toy_val_spec(data, toy_seed, toy_task).val


def logit_scale_of(encoder: Encoder) -> float | None:
    """exp(logit_scale) of the encoder's model, clamped as in training; None for a model without one."""
    scale = getattr(getattr(encoder, "model", None), "logit_scale", None)
    if not isinstance(scale, torch.Tensor):
        return None
    return min(float(scale.detach().float().exp()), MAX_LOGIT_SCALE)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: float,
                     batch: int = VAL_LOSS_BATCH) -> float:
    """Mean over consecutive batches of `batch` pairs of CLIP's symmetric cross-entropy (a short last
    batch counts by its size)."""
    total, count = 0.0, 0
    for start in range(0, len(image_features), batch):
        images, texts = image_features[start:start + batch], text_features[start:start + batch]
        logits = scale * images @ texts.T
        labels = torch.arange(len(images))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        total, count = total + float(loss) * len(images), count + len(images)
    return total / count


def caption_recall_at_1(image_features: torch.Tensor, text_features: torch.Tensor,
                        captions: list[str]) -> tuple[float, float]:
    """(image->text R@1, text->image R@1) in percent, identical caption strings merged into one text."""
    unique = sorted(set(captions))
    index = {caption: i for i, caption in enumerate(unique)}
    caption_of = torch.tensor([index[c] for c in captions])
    first = torch.tensor([captions.index(c) for c in unique])  # same string, same features
    texts = text_features[first]
    similarity = image_features @ texts.T  # (images, unique captions)
    i2t = (ranked_classes(similarity, 1)[:, 0] == caption_of).float().mean()
    best_image = ranked_classes(similarity.T, 1)[:, 0]
    t2i = (caption_of[best_image] == torch.arange(len(unique))).float().mean()
    return float(i2t) * 100, float(t2i) * 100


def _subset_metrics(ranked: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, seed: int,
                    suffix: str) -> dict[str, Any]:
    if not bool(mask.any()):
        return {f"top1_{suffix}": None, f"top1_{suffix}_ci95": None, f"n_{suffix}": 0}
    metrics = classification_metrics(ranked[mask], targets[mask], seed=seed)
    attributes = attribute_accuracy(ranked[mask][:, 0], targets[mask], toy_data.CLASS_ATTRIBUTES)
    return {f"top1_{suffix}": metrics["top1"], f"top1_{suffix}_ci95": metrics["top1_ci95"],
            f"n_{suffix}": metrics["n"], **{f"{k}_{suffix}": v for k, v in attributes.items()}}


def toy_eval(encoder: Encoder, data: str | Path | None = None, batch_size: int = 64, workers: int = 0,
             limit: int | None = None, seed: int = 0, progress: bool = True, keep_predictions: bool = False,
             rank: int = 0, world_size: int = 1, toy_seed: int | None = None,
             toy_task: str | None = None) -> dict[str, Any]:
    """Every toy score of `encoder` on the val split (see the module docstring; `data`, `toy_seed`,
    `toy_task`: `toy_val_spec`'s); `limit` scores at most that many images (the first ones; with several
    processes an equal part of each one's shards)."""
    toy = toy_val_spec(data, toy_seed, toy_task)
    val = toy.val
    share = {"rank": rank, "world_size": world_size}
    names = list(toy_data.CLASS_NAMES)
    classifier = zero_shot_classifier(encoder, names, list(toy_data.TOY_TEMPLATES), cache=False, **share)
    robust = zero_shot_classifier(encoder, names, list(toy_data.TOY_ROBUSTNESS_TEMPLATES), cache=False,
                                  **share)
    try:
        loader = EvalLoader(eval_dataset(val, encoder.preprocess, batch_size, with_class=True, **share),
                            workers)
    except ShardSpecError as exc:
        raise InputError(f"--data {val}: {exc}") from None
    if limit is not None:
        limit = limit // world_size + (rank < limit % world_size)
    mine: dict[str, list] = {"images": [], "texts": [], "ranked": [], "robust": [], "targets": [],
                             "captions": [], "keys": []}
    seen = 0
    for images, captions, classes, keys in tqdm([] if limit == 0 else loader, desc="zero-shot toy",
                                                unit="batch", disable=not progress or rank != 0):
        if limit is not None and seen + len(images) > limit:
            keep = limit - seen
            images, captions, classes, keys = images[:keep], captions[:keep], classes[:keep], keys[:keep]
        features = encoder.encode_image(images).cpu()
        mine["images"].append(features)
        mine["texts"].append(encoder.encode_text(list(captions)).cpu())
        mine["ranked"].append(ranked_classes(features @ classifier.cpu(), 5))
        mine["robust"].append(ranked_classes(features @ robust.cpu(), 1))
        mine["targets"].append(torch.as_tensor(classes).long())
        mine["captions"] += list(captions)
        mine["keys"] += list(keys)
        seen += len(images)
        if limit is not None and seen >= limit:
            break
    shares = gather_objects((mine, loader.skipped()), world_size)
    merged = {k: [item for part, _ in shares for item in part[k]] for k in mine}
    if not merged["keys"]:
        raise InputError(f"--data {val}: no images found")
    order = sorted(range(len(merged["keys"])), key=merged["keys"].__getitem__)  # the one-process order
    tensors = {k: torch.cat(merged[k])[order] for k in ("images", "texts", "ranked", "robust", "targets")}
    captions = [merged["captions"][i] for i in order]
    ranked, targets = tensors["ranked"], tensors["targets"]

    result = classification_metrics(ranked, targets, seed=seed)
    result.update(attribute_accuracy(ranked[:, 0], targets, toy_data.CLASS_ATTRIBUTES))
    held_out = torch.isin(targets, torch.tensor(toy.held_out_classes))
    result.update(_subset_metrics(ranked, targets, ~held_out, seed, "seen"))
    result.update(_subset_metrics(ranked, targets, held_out, seed, "held_out"))
    result["robust_top1"] = float((tensors["robust"][:, 0] == targets).float().mean()) * 100
    result["i2t_r1"], result["t2i_r1"] = caption_recall_at_1(tensors["images"], tensors["texts"], captions)
    scale = logit_scale_of(encoder)
    result["val_loss"] = (contrastive_loss(tensors["images"], tensors["texts"], scale)
                          if scale is not None else None)
    result.update(num_classes=len(names), templates="toy", num_templates=len(toy_data.TOY_TEMPLATES),
                  dataset="toy", toy_version=toy_data.VERSION, toy_manifest_sha256=toy.manifest_sha256,
                  toy_seed=toy.seed, toy_task=toy.task, held_out_classes=list(toy.held_out_classes))
    skipped: dict[str, int] = {}
    for _, counts in shares:
        for kind, n in counts.items():
            skipped[kind] = skipped.get(kind, 0) + n
    if skipped:
        result["skipped"] = skipped
    if world_size > 1:
        result["processes"] = world_size
    if keep_predictions:
        result["predictions"] = {"ranked": ranked.tolist(), "targets": targets.tolist()}
    return result


def summary_line(result: dict[str, Any]) -> str:
    """One line of the headline toy scores, as the trainer and the runner print them."""
    def pct(value):
        return "n/a" if value is None else f"{value:.1f}%"
    loss = "n/a" if result.get("val_loss") is None else f"{result['val_loss']:.3f}"
    return (f"toy zero-shot top-1 seen {pct(result['top1_seen'])}, held-out {pct(result['top1_held_out'])} "
            f"(all {pct(result['top1'])}); R@1 i2t {pct(result['i2t_r1'])}, t2i {pct(result['t2i_r1'])}; "
            f"val loss {loss}")
