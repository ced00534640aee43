"""What the ImageNet zero-shot classifier costs with and without stopping the text at the longest EOT.

Builds the 80-template classifier of a B/32 pair (random weights: the cost does not depend on them) for
the first ``--classes`` ImageNet classes twice, once over all 77 positions and once up to each batch's
longest EOT, reports both times, the time extrapolated to the 1000 classes and the ratio, and checks
that the two classifiers agree.

    python -m benchmarks.classifier_cost                          # transformer-B-32, 10 classes
    python -m benchmarks.classifier_cost --model mixer-B-32 --classes 20
"""

from __future__ import annotations

import argparse
import time

import torch
from open_clip import IMAGENET_CLASSNAMES

import towers
from benchmarks.encoder import ModelEncoder
from benchmarks.zeroshot_classifier import TEMPLATE_SETS, zero_shot_classifier


def time_classifier(model: torch.nn.Module, classes: int, templates: str, stop_at_eot: bool,
                    batch_size: int) -> tuple[float, torch.Tensor]:
    """(seconds, (D, classes) classifier) for the first ``classes`` ImageNet classes."""
    encoder = ModelEncoder(model, "cpu", batch_size=batch_size, stop_at_eot=stop_at_eot)
    start = time.perf_counter()
    classifier = zero_shot_classifier(encoder, IMAGENET_CLASSNAMES[:classes], TEMPLATE_SETS[templates],
                                      cache=False, progress=False)
    return time.perf_counter() - start, classifier


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.classifier_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="transformer-B-32", choices=towers.available_models(),
                        help="towers model name, random weights (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=10,
                        help="classes to build (x templates prompts) (default: %(default)s)")
    parser.add_argument("--templates", choices=sorted(TEMPLATE_SETS), default="openai",
                        help="template set (default: %(default)s: 80 templates)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="prompts per forward (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.classes <= len(IMAGENET_CLASSNAMES):
        parser.error(f"--classes {args.classes}: expected 1..{len(IMAGENET_CLASSNAMES)}")
    torch.manual_seed(0)
    model = towers.create_model(args.model).eval()
    prompts = args.classes * len(TEMPLATE_SETS[args.templates])
    times, classifiers = {}, {}
    for label, stop in (("all 77 positions", False), ("up to the longest EOT", True)):
        times[label], classifiers[label] = time_classifier(model, args.classes, args.templates, stop,
                                                           args.batch_size)
        print(f"{args.model} {prompts} prompts, {label}: {times[label]:.1f} s "
              f"(1000 classes: {times[label] * len(IMAGENET_CLASSNAMES) / args.classes / 60:.1f} min)")
    before, after = times.values()
    difference = (classifiers["all 77 positions"] - classifiers["up to the longest EOT"]).abs().max().item()
    print(f"speed-up {before / after:.2f}x; classifiers differ by at most {difference:.1e}")
    return {"model": args.model, "prompts": prompts, "seconds_before": before, "seconds_after": after,
            "speedup": before / after, "max_abs_difference": difference}


if __name__ == "__main__":
    main()
