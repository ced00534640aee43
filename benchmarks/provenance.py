"""Shared pieces of the benchmark runners: data/cache locations, the model flags, one-line CLI errors,
and the provenance-stamped JSON result every runner writes.

A result lands in ``<results-dir>/<benchmark>/<model-id>[__<what>...].json`` (default
``results/scores``), where the ``__`` parts name what makes the measurement differ from another of the
same model (data set, template set, ``--limit``: ``result_name``), so an ImageNetV2, ``--templates
simple`` or ``--limit 100`` run never overwrites the ImageNet-val result. It holds the metrics plus
everything needed to trust or reproduce them: benchmark version, model id and source, checkpoint
sha256, ``recipe_sha256`` (our checkpoints), git commit of this code, library versions, date. Next to
it, where the benchmark has an anchor, the same numbers in the anchor's schema
(``benchmarks.result_formats``: CLIP_benchmark's result JSON, MTEB's TaskResult).

Not run directly; the runners (``python -m benchmarks.sts`` etc.) use it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.data.files import InputError
from benchmarks.encoder import Encoder, load_encoder
from benchmarks.runner_flags import (  # noqa: F401 - the runners' flags, re-exported
    add_model_arguments,
    add_output_arguments,
)
from runfolder.code_version import code_version, git_commit  # noqa: F401 - re-exported
from runfolder.errors import fail  # noqa: F401 - re-exported: the runners' one-line exit 2
from runfolder.records import json_safe, write_json  # noqa: F401 - re-exported to the runners
from runfolder.score_records import (  # noqa: F401 - re-exported to the runners
    result_name,
    safe_model_id,
    score_record,
)
from runfolder.score_records import write_score_record as write_result
from runfolder.vocabulary import BENCHMARK_VERSIONS
from towers.precision import resolve_precision

_VERSIONED_PACKAGES = (
    "mixclip-bench", "torch", "torchvision", "open_clip_torch", "timm", "numpy", "scipy",
    "sentence-transformers", "transformers", "mteb", "webdataset", "accelerate",
)


def _precision(args: argparse.Namespace) -> str:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_precision(args.precision, torch.device(device).type)[0]  # as training resolves it


def encoder_from_args(args: argparse.Namespace) -> Encoder:
    """Build the Encoder the model flags name; a bad model is a one-line error with exit status 2."""
    try:
        return load_encoder(
            model=args.model, open_clip_arch=args.open_clip, pretrained=args.pretrained,
            sentence_transformers=getattr(args, "sentence_transformers", None),
            device=args.device, precision=_precision(args), model_id=args.model_id,
            untrained=getattr(args, "untrained", False),
        )
    except (InputError, FileNotFoundError) as exc:
        fail(str(exc))
    except ValueError as exc:  # towers.CheckpointError and friends: already one line
        fail(f"--model {args.model or args.open_clip}: {exc}")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def command_line() -> str:
    """How this process was started (``python -m benchmarks.sts ...``, ``python launch/train.py ...``):
    the interpreter's own command line, so ``-m`` and script paths show as they were typed."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return shlex.join(["python", *argv[1:]])


def stamp(benchmark: str, metrics: dict[str, Any], encoder: Encoder | None = None,
          model_info: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result record: provenance first, then the run's settings and metrics."""
    info = dict(encoder.info) if encoder is not None else {}
    info.update(model_info or {})
    return score_record(benchmark, BENCHMARK_VERSIONS[benchmark], info, code_version(), library_versions(),
                        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), command_line(),
                        settings or {}, metrics)


# Folder names too generic to tell two data sets apart: the parent's name goes in front ("imagenet-val").
GENERIC_FOLDER_NAMES = frozenset({"val", "validation", "test", "train", "images", "data", "shards"})


def data_label(data: str | Path | None, default: str) -> str:
    """A short file-name-safe name of the data a result was measured on: the folder's name (a shard
    pattern's or list's folder, a data file's stem), its parent's in front when it is generic."""
    if data is None:
        return default
    path = Path(str(data).split("::")[0])
    if "{" in path.name or path.suffix == ".tar":
        path = path.parent
    elif path.suffix in (".json", ".jsonl", ".tsv"):
        path = path.with_suffix("")
    path = path.resolve()
    name = path.name or default
    if name.lower() in GENERIC_FOLDER_NAMES and path.parent.name:
        name = f"{path.parent.name}-{name}"
    return safe_model_id(name)


def limit_part(limit: int | None) -> str | None:
    return f"limit{limit}" if limit is not None else None


def finish(benchmark: str, metrics: dict[str, Any], args: argparse.Namespace,
           encoder: Encoder | None = None, model_info: dict[str, Any] | None = None,
           settings: dict[str, Any] | None = None, name_parts: Sequence[str | None] = (),
           anchor_writer: Callable[[dict[str, Any], Path], list[Path]] | None = None) -> dict[str, Any]:
    """Stamp the metrics and, unless ``--no-save``, write them as ``result_name(model id, *name_parts)``
    and, with ``anchor_writer``, in the anchor's schema next to them; prints where each file went."""
    record = stamp(benchmark, metrics, encoder=encoder, model_info=model_info, settings=settings)
    if not getattr(args, "no_save", False):
        path = write_result(record, args.results_dir, result_name(record["model_id"], *name_parts))
        print(f"wrote {path}")
        for sibling in anchor_writer(record, path) if anchor_writer else ():
            print(f"wrote {sibling}")
    return record
