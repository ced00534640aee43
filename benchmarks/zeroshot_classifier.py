"""The zero-shot classifier: class weights from open_clip's builder on any Encoder, cached, and split
over the processes of a distributed evaluation.

The weights are open_clip's own ``build_zero_shot_classifier`` (each class: the mean of its
L2-normalised template embeddings, renormalised) driven through our Encoder, and cached on disk under
``$MIXCLIP_CACHE/zeroshot`` keyed by the model's sha256 and the template/class set. Across processes,
each builds every ``world_size``-th block of ``CLASSES_PER_BATCH`` classes (the builder's own batches,
so every forward is one the single process runs too) and one gather assembles the whole classifier.

    classifier = zero_shot_classifier(encoder, IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES)  # (D, 1000)

Not run directly: ``python -m benchmarks.imagenet_zeroshot`` uses it, ``python -m
benchmarks.performance.classifier_cost`` times it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES, build_zero_shot_classifier

from benchmarks.data.files import cache_dir
from benchmarks.encoder import Encoder
from benchmarks.process_group import gather_objects
from runfolder import atomic_write
from runfolder.vocabulary import TEMPLATE_SET_NAMES

# open_clip's template sets under the vocabulary's names (openai: 80 templates, simple: 7)
TEMPLATE_SETS = dict(zip(TEMPLATE_SET_NAMES, (OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES),
                         strict=True))
CLASSES_PER_BATCH = 10  # open_clip's default: 800 prompts per forward with the 80 templates


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


def class_blocks(num_classes: int, rank: int, world_size: int) -> list[range]:
    """The blocks of ``CLASSES_PER_BATCH`` class indices that ``rank`` builds (every world_size-th)."""
    blocks = [range(start, min(start + CLASSES_PER_BATCH, num_classes))
              for start in range(0, num_classes, CLASSES_PER_BATCH)]
    return blocks[rank::world_size]


def _build(encoder: Encoder, classnames: Sequence[str], templates: Sequence, progress: bool) -> torch.Tensor:
    if not classnames:
        return torch.empty(0, 0)
    return build_zero_shot_classifier(
        _EncoderAsOpenClipModel(encoder), _TextList, list(classnames), list(templates),
        num_classes_per_batch=CLASSES_PER_BATCH, device=encoder.device, use_tqdm=progress)


def _read_cache(path: Path | None, model_key: str | None, num_classes: int) -> torch.Tensor | None:
    if path is None or not path.is_file():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if stored.get("model_key") == model_key and stored["classifier"].shape[1] == num_classes:
        return stored["classifier"]
    return None


def _write_cache(path: Path, classifier: torch.Tensor, model_key: str, classnames: Sequence[str],
                 templates: Sequence) -> None:
    stored = {"classifier": classifier.cpu(), "model_key": model_key,
              "templates": template_strings(templates), "classnames": list(classnames)}
    atomic_write(path, lambda f: torch.save(stored, f))  # a concurrent reader never sees half a file


def zero_shot_classifier(encoder: Encoder, classnames: Sequence[str], templates: Sequence,
                         cache: bool = True, progress: bool = True, rank: int = 0,
                         world_size: int = 1) -> torch.Tensor:
    """(D, C) class weights built by open_clip's ``build_zero_shot_classifier`` on ``encoder``.

    With ``cache`` and a model that has a ``cache_key()``, the weights are read from / written to the
    on-disk cache. With ``world_size`` > 1 every process calls this with its ``rank``: each builds its
    blocks of classes (``class_blocks``) or takes them from its cache, and all get the whole classifier.
    """
    model_key = encoder.cache_key() if cache else None
    if model_key and getattr(encoder, "precision", "fp32") != "fp32":
        model_key += f"-{encoder.precision}"  # a bf16 classifier differs in the last bits
    path = classifier_cache_path(model_key, classnames, templates) if model_key else None
    cached = _read_cache(path, model_key, len(classnames))
    if world_size == 1:
        if cached is not None:
            return cached.to(encoder.device)
        classifier = _build(encoder, classnames, templates, progress)
    else:
        mine = [i for block in class_blocks(len(classnames), rank, world_size) for i in block]
        part = cached[:, mine] if cached is not None else _build(
            encoder, [classnames[i] for i in mine], templates, progress and rank == 0).cpu()
        columns = [None] * len(classnames)
        for indices, piece in gather_objects((mine, part.float().cpu()), world_size):
            for column, index in enumerate(indices):
                columns[index] = piece[:, column]
        classifier = torch.stack(columns, dim=1).to(encoder.device)
        if cached is not None or rank != 0:
            return classifier
    if path is not None:
        _write_cache(path, classifier, model_key, classnames, templates)
    return classifier
