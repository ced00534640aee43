"""The ImageNet zero-shot score: open_clip's protocol on ImageNet-1k (or ImageNetV2) for one encoder.

The classifier is open_clip's own ``build_zero_shot_classifier`` over OpenAI's 1000 ImageNet class names
and 80 templates (both shipped by open_clip), run through our Encoder and cached per model
(``benchmarks.zeroshot_classifier``). Images come from a folder in ILSVRC val layout
(``DIR/<wnid>/*.JPEG``; class index = ILSVRC index = sorted wnid order), a folder in ImageNetV2's
layout (``DIR/<class index>/*.jpeg``), or WebDataset shards with ``.cls`` (``benchmarks.data.imagenet``).
Metrics (percent, ``benchmarks.classification_metrics``): top-1, top-5, mean per-class recall, and a
seeded bootstrap 95% CI of top-1. With several processes each scores its share and every one returns
the result a single process gets.

Not run directly: ``benchmarks.evaluations`` registers it as the set ``imagenet``, which
``python -m benchmarks.imagenet_zeroshot`` and training's ``--evals imagenet`` score.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from open_clip import IMAGENET_CLASSNAMES
from tqdm import tqdm

from benchmarks.classification_metrics import classification_metrics, ranked_classes
from benchmarks.data.files import InputError
from benchmarks.data.imagenet import IMAGEFOLDER_LAYOUT, imagefolder_batches, is_shard_spec, shard_batches
from benchmarks.encoder import Encoder
from benchmarks.process_group import gather_objects
from benchmarks.zeroshot_classifier import TEMPLATE_SETS, zero_shot_classifier


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


def imagenet_eval(encoder: Encoder, data: str | Path | None = None, batch_size: int = 64, workers: int = 0,
                  limit: int | None = None, templates: str = "openai", cache: bool | None = None,
                  seed: int = 0, progress: bool = True, keep_predictions: bool = False, rank: int = 0,
                  world_size: int = 1) -> dict[str, Any]:
    """ImageNet zero-shot accuracy of ``encoder`` (``benchmarks.evaluations.zero_shot_eval`` documents the
    arguments and the result); ``cache`` None means on."""
    skipped: dict[str, int] = {}
    share = {"rank": rank, "world_size": world_size}
    classnames, template_list = list(IMAGENET_CLASSNAMES), list(TEMPLATE_SETS[templates])
    batches, total = imagenet_batches(data, encoder.preprocess, batch_size, workers, limit, skipped, **share)
    use_cache = True if cache is None else cache
    classifier = zero_shot_classifier(encoder, classnames, template_list, cache=use_cache,
                                      progress=progress and rank == 0, **share)

    k = min(5, len(classnames))
    steps = None if total is None else -(-total // batch_size)
    shown = tqdm(batches, total=steps, desc="zero-shot imagenet", unit="batch",
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
                  dataset="imagenet")
    if world_size > 1:
        result["processes"] = world_size
    if skipped:
        result["skipped"] = dict(skipped)
    if keep_predictions:
        result["predictions"] = {"ranked": ranked_all.tolist(), "targets": targets_all.tolist()}
    return result


def summary_line(result: dict[str, Any]) -> str:
    """The headline ImageNet scores in one line, as the trainer prints them."""
    return f"imagenet zero-shot top-1 {result['top1']:.1f}%, top-5 {result['top5']:.1f}%"


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
