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

Called by `benchmarks.imagenet_zeroshot --dataset toy` and by the trainer's in-training evaluation; with
`world_size` processes each encodes its share and one gather joins them, so every process returns the
single-process result.

    python -m benchmarks.imagenet_zeroshot --model runs/mixer-w96-seed0 --dataset toy
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.data import toy as toy_data
from benchmarks.data.files import InputError
from benchmarks.data.imagenet import is_shard_spec
from benchmarks.data.shards import EvalLoader, ShardSpecError, eval_dataset
from benchmarks.encoder import Encoder
from benchmarks.imagenet_zeroshot import attribute_accuracy, classification_metrics, ranked_classes
from benchmarks.process_group import gather_objects
from benchmarks.zeroshot_classifier import zero_shot_classifier

VAL_LOSS_BATCH = 64  # fixed, not the recipe's batch: runs of other batches compare (chance ln 64)
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of exp(logit_scale)


def toy_val_spec(data: str | Path | None) -> tuple[str, str | None]:
    """(val shard pattern, manifest sha256 or None): `data` is None (the default toy set), a cache root,
    or the val shards themselves."""
    if data is not None and is_shard_spec(str(data)):
        return str(data), None
    toy = toy_data.ensure_toy(data)
    return toy.val, toy.manifest_sha256


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
             rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Every toy score of `encoder` on the val split (see the module docstring); `limit` scores at most that
    many images (the first ones; with several processes an equal part of each one's shards)."""
    val, manifest = toy_val_spec(data)
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
    held_out = torch.isin(targets, torch.tensor(toy_data.HELD_OUT_CLASSES))
    result.update(_subset_metrics(ranked, targets, ~held_out, seed, "seen"))
    result.update(_subset_metrics(ranked, targets, held_out, seed, "held_out"))
    result["robust_top1"] = float((tensors["robust"][:, 0] == targets).float().mean()) * 100
    result["i2t_r1"], result["t2i_r1"] = caption_recall_at_1(tensors["images"], tensors["texts"], captions)
    scale = logit_scale_of(encoder)
    result["val_loss"] = (contrastive_loss(tensors["images"], tensors["texts"], scale)
                          if scale is not None else None)
    result.update(num_classes=len(names), templates="toy", num_templates=len(toy_data.TOY_TEMPLATES),
                  dataset="toy", toy_version=toy_data.VERSION, toy_manifest_sha256=manifest,
                  held_out_classes=list(toy_data.HELD_OUT_CLASSES))
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
