"""Zero-shot classification with open_clip's protocol: ImageNet-1k, or the embedded toy data set.

The classifier is open_clip's own ``build_zero_shot_classifier`` over OpenAI's 1000 ImageNet class names
and 80 templates (both shipped by open_clip), run through our Encoder, and cached on disk under
``$MIXCLIP_CACHE/zeroshot`` keyed by the model's sha256 and the template/class set. Images come from an
ImageFolder in ILSVRC val layout (``DIR/<wnid>/*.JPEG``; class index = ILSVRC index = sorted wnid order,
so a folder holding only some classes still gets the right labels) or WebDataset shards with ``.cls``.
Metrics (percent): top-1, top-5, mean per-class recall, and a seeded bootstrap 95% CI of top-1.

    python -m benchmarks.imagenet_zeroshot --model runs/mixer-b32 --data /data/imagenet/val
    python -m benchmarks.imagenet_zeroshot --open-clip ViT-B-32 --data ../shared/data/imagenet_samples
    python -m benchmarks.imagenet_zeroshot --model runs/mixer-tiny --dataset toy
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from open_clip import (
    IMAGENET_CLASSNAMES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_IMAGENET_TEMPLATES,
    build_zero_shot_classifier,
)
from tqdm import tqdm

from benchmarks.data.files import InputError, cache_dir
from benchmarks.data.imagenet import IMAGEFOLDER_LAYOUT, imagefolder_batches, is_shard_spec, shard_batches
from benchmarks.encoder import Encoder
from benchmarks.provenance import (
    add_model_arguments,
    add_output_arguments,
    encoder_from_args,
    fail,
    finish,
)

TEMPLATE_SETS = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
BOOTSTRAP_RESAMPLES = 1000


# --- classifier ----------------------------------------------------------------------------------

class _TextList(list):
    """A list of strings that open_clip's builder can ``.to(device)``: the Encoder tokenises itself."""

    def to(self, device: Any) -> _TextList:
        return self


class _EncoderAsOpenClipModel:
    """The one method ``build_zero_shot_classifier`` calls, answered by an Encoder."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    def encode_text(self, texts: Sequence[str], normalize: bool = False) -> torch.Tensor:
        return self.encoder.encode_text(list(texts))  # already L2-normalised


def template_strings(templates: Sequence[Callable[[str], str] | str]) -> list[str]:
    """Templates as format strings (``"a photo of a {}."``), for hashing and for the record."""
    return [t if isinstance(t, str) else t("{}") for t in templates]


def classifier_cache_path(model_key: str, classnames: Sequence[str], templates: Sequence) -> Path:
    blob = json.dumps({"classnames": list(classnames), "templates": template_strings(templates)})
    set_key = hashlib.sha256(blob.encode()).hexdigest()
    return cache_dir() / "zeroshot" / f"{model_key[:24]}-{set_key[:16]}.pt"


def zero_shot_classifier(encoder: Encoder, classnames: Sequence[str], templates: Sequence,
                         cache: bool = True, progress: bool = True) -> torch.Tensor:
    """(D, C) class weights built by open_clip's ``build_zero_shot_classifier`` on ``encoder``.

    Each class: the mean of its L2-normalised template embeddings, renormalised. With ``cache`` and a
    model that has a ``cache_key()``, the weights are read from / written to the on-disk cache.
    """
    model_key = encoder.cache_key() if cache else None
    if model_key and getattr(encoder, "precision", "fp32") != "fp32":
        model_key += f"-{encoder.precision}"  # a bf16 classifier differs in the last bits
    path = classifier_cache_path(model_key, classnames, templates) if model_key else None
    if path is not None and path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("model_key") == model_key and stored["classifier"].shape[1] == len(classnames):
            return stored["classifier"].to(encoder.device)
    classifier = build_zero_shot_classifier(
        _EncoderAsOpenClipModel(encoder), _TextList, list(classnames), list(templates),
        num_classes_per_batch=10, device=encoder.device, use_tqdm=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"classifier": classifier.cpu(), "model_key": model_key,
                    "templates": template_strings(templates), "classnames": list(classnames)}, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return classifier


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

def zero_shot_eval(encoder: Encoder, dataset: str = "imagenet", data: str | Path | None = None,
                   batch_size: int = 64, workers: int = 0, limit: int | None = None,
                   templates: str = "openai", cache: bool | None = None, seed: int = 0,
                   progress: bool = True, keep_predictions: bool = False) -> dict[str, Any]:
    """Zero-shot accuracy of ``encoder`` (what ``python -m benchmarks.imagenet_zeroshot`` runs).

    dataset="imagenet": ``data`` is an ILSVRC-layout ImageFolder or a WebDataset shard spec with ``.cls``;
    classes/templates are open_clip's (``templates="openai"``: 80, ``"simple"``: 7).
    dataset="toy": the embedded data set's val split (``data``: None for the default toy set, a cache
    root for ``toy_data.ensure_toy``, or the val shard pattern itself), its 64 class names and
    ``TOY_TEMPLATES``; adds ``colour_acc`` and ``shape_acc``: % of images whose predicted class has the
    true colour / shape (chance 12.5% each).

    Returns (percent): ``top1``, ``top5``, ``mean_per_class_recall`` (over the classes present in the
    data), ``top1_ci95`` ([low, high],
    bootstrap of top-1, ``BOOTSTRAP_RESAMPLES`` resamples, ``seed``), ``n``, ``classes_present``,
    ``num_classes``, ``templates``. ``limit`` evaluates at most that many images (ImageFolder: evenly
    spaced; shards: the first). ``cache`` (default: on for ImageNet, off for toy whose classifier is cheap
    and whose model changes during training) stores the classifier under $MIXCLIP_CACHE/zeroshot.
    ``keep_predictions`` adds ``predictions`` ({"ranked": top-k class ids per image, "targets"}).
    The encoder's model is left in the train/eval mode it had.
    """
    if encoder.preprocess is None:
        raise InputError(f"model {encoder.model_id} is text-only; zero-shot needs an image tower")
    attributes: Sequence[dict[str, Any]] = ()
    skipped: dict[str, int] = {}
    if dataset == "imagenet":
        if data is None:
            raise InputError(f"--data is required for ImageNet: {IMAGEFOLDER_LAYOUT} or shards")
        classnames, template_list = list(IMAGENET_CLASSNAMES), list(TEMPLATE_SETS[templates])
        if is_shard_spec(str(data)):
            batches = shard_batches(str(data), encoder.preprocess, batch_size, workers, limit, skipped)
            total = None
        else:
            batches, total = imagefolder_batches(data, encoder.preprocess, batch_size, workers, limit)
    elif dataset == "toy":
        from benchmarks.data import toy as toy_data

        if data is not None and is_shard_spec(str(data)):
            val, manifest = str(data), None  # val shards given directly (the trainer's own toy set)
        else:
            toy = toy_data.ensure_toy(data)
            val, manifest = toy.val, toy.manifest_sha256
        classnames, template_list = list(toy_data.CLASS_NAMES), list(toy_data.TOY_TEMPLATES)
        attributes = list(toy_data.CLASS_ATTRIBUTES)
        batches, total = shard_batches(val, encoder.preprocess, batch_size, workers, limit, skipped), None
        templates = "toy"
    else:
        raise InputError(f"--dataset {dataset}: expected imagenet or toy")
    use_cache = (dataset == "imagenet") if cache is None else cache
    classifier = zero_shot_classifier(encoder, classnames, template_list, cache=use_cache, progress=progress)

    k = min(5, len(classnames))
    ranked, targets = [], []
    for images, labels in tqdm(batches, total=None if total is None else -(-total // batch_size),
                               desc=f"zero-shot {dataset}", unit="batch", disable=not progress):
        features = encoder.encode_image(images)
        ranked.append(ranked_classes(100.0 * features @ classifier, k).cpu())
        targets.append(torch.as_tensor(labels).long())
    if not ranked:
        raise InputError(f"--data {data}: no images found")
    ranked_all, targets_all = torch.cat(ranked), torch.cat(targets)
    if int(targets_all.max()) >= len(classnames) or int(targets_all.min()) < 0:
        raise InputError(f"--data {data}: class index {int(targets_all.max())} outside the "
                         f"{len(classnames)} classes")
    result = classification_metrics(ranked_all, targets_all, seed=seed)
    if attributes:
        result.update(attribute_accuracy(ranked_all[:, 0], targets_all, attributes))
    result.update(num_classes=len(classnames), templates=templates, num_templates=len(template_list),
                  dataset=dataset)
    if dataset == "toy":
        result["toy_manifest_sha256"] = manifest
    if skipped:
        result["skipped"] = dict(skipped)
    if keep_predictions:
        result["predictions"] = {"ranked": ranked_all.tolist(), "targets": targets_all.tolist()}
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.imagenet_zeroshot",
                                     description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, text_only_ok=False)
    parser.add_argument("--dataset", choices=("imagenet", "toy"), default="imagenet",
                        help="ImageNet-1k classes, or the embedded toy data set's val split "
                             "(default: %(default)s)")
    parser.add_argument("--data", default=None,
                        help=f"imagenet: {IMAGEFOLDER_LAYOUT}, or WebDataset shards with .cls "
                             "(e.g. 'val/{00000..00063}.tar'); toy: cache root or val shards "
                             "(default: the toy cache)")
    parser.add_argument("--templates", choices=sorted(TEMPLATE_SETS), default="openai",
                        help="open_clip's template set for ImageNet (openai: 80, simple: 7) "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0,
                        help="data loader worker processes (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N images (quick checks)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild the classifier, do not cache it")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dataset == "imagenet":
        if args.data is None:
            parser.error(f"--data is required with --dataset imagenet: {IMAGEFOLDER_LAYOUT} or shards")
        if not is_shard_spec(args.data) and not Path(args.data).is_dir():
            fail(f"--data {args.data}: no such directory; expected {IMAGEFOLDER_LAYOUT} "
                 "or WebDataset shards with .cls")
    encoder = encoder_from_args(args)
    try:
        result = zero_shot_eval(encoder, args.dataset, args.data, args.batch_size, args.workers, args.limit,
                                templates=args.templates, cache=False if args.no_cache else None,
                                seed=args.seed)
    except InputError as exc:
        fail(str(exc))
    low, high = result["top1_ci95"]
    print(f"{args.dataset} zero-shot  n={result['n']}  top1 {result['top1']:.2f} "
          f"(95% CI {low:.2f}-{high:.2f})  top5 {result['top5']:.2f}  "
          f"mean per-class recall {result['mean_per_class_recall']:.2f}")
    settings = {"dataset": args.dataset, "data": args.data, "templates": args.templates, "limit": args.limit,
                "seed": args.seed}
    # toy results get their own folder so they never overwrite a model's ImageNet result
    benchmark = "imagenet_zeroshot" if args.dataset == "imagenet" else "toy_zeroshot"
    return finish(benchmark, result, args, encoder=encoder, settings=settings)


if __name__ == "__main__":
    main()
