"""What the ImageNet zero-shot classifier costs with and without stopping the text at the longest EOT.

Builds the 80-template classifier of a B/32 pair (random weights: the cost does not depend on them) for
``--classes`` ImageNet classes spread evenly over the 1000 (so their names are as long as the whole
set's), over all 77 positions and up to each batch's longest EOT, ``--repeats`` times each in turn (the
fastest counts: on a shared machine the slower ones measure the neighbours), reports both times, the
time extrapolated to the 1000 classes and the ratio, and checks that the two classifiers agree.

    python -m benchmarks.performance.classifier_cost  # transformer-B-32, 10 classes, twice
    python -m benchmarks.performance.classifier_cost --model mixer-B-32 --classes 20
"""

from __future__ import annotations

import time

import torch
from open_clip import IMAGENET_CLASSNAMES

import towers
from benchmarks.encoder import ModelEncoder
from benchmarks.provenance import fail
from benchmarks.zeroshot_classifier import TEMPLATE_SETS, zero_shot_classifier
from runfolder.errors import OneLineParser, run_main


def spread_classes(count: int) -> list[str]:
    """``count`` ImageNet class names evenly spaced over the 1000."""
    picks = sorted({round(i * (len(IMAGENET_CLASSNAMES) - 1) / max(count - 1, 1)) for i in range(count)})
    return [IMAGENET_CLASSNAMES[i] for i in picks]


def time_classifier(model: torch.nn.Module, classnames: list[str], templates: str, stop_at_eot: bool,
                    batch_size: int) -> tuple[float, torch.Tensor]:
    """(seconds, (D, classes) classifier) for ``classnames``."""
    encoder = ModelEncoder(model, "cpu", batch_size=batch_size, stop_at_eot=stop_at_eot)
    start = time.perf_counter()
    classifier = zero_shot_classifier(encoder, classnames, TEMPLATE_SETS[templates], cache=False,
                                      progress=False)
    return time.perf_counter() - start, classifier


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(prog="python -m benchmarks.performance.classifier_cost",
                           description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="transformer-B-32", choices=towers.available_models(),
                        help="towers model name, random weights (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=10,
                        help="classes to build (x templates prompts) (default: %(default)s)")
    parser.add_argument("--templates", choices=sorted(TEMPLATE_SETS), default="openai",
                        help="template set (default: %(default)s: 80 templates)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="prompts per forward (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="times each way, in turn; the fastest counts (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.classes <= len(IMAGENET_CLASSNAMES):
        fail(f"--classes {args.classes}: expected 1..{len(IMAGENET_CLASSNAMES)}")
    if args.repeats < 1:
        fail(f"--repeats {args.repeats}: expected >= 1")
    torch.manual_seed(0)
    model = towers.create_model(args.model).eval()
    classnames = spread_classes(args.classes)
    prompts = len(classnames) * len(TEMPLATE_SETS[args.templates])
    modes = {"all 77 positions": False, "up to the longest EOT": True}
    times: dict[str, float] = {}
    classifiers = {}
    for _ in range(args.repeats):
        for label, stop in modes.items():
            seconds, classifiers[label] = time_classifier(model, classnames, args.templates, stop,
                                                          args.batch_size)
            times[label] = min(times.get(label, seconds), seconds)
    for label, seconds in times.items():
        print(f"{args.model} {prompts} prompts, {label}: {seconds:.1f} s "
              f"(1000 classes: {seconds * len(IMAGENET_CLASSNAMES) / len(classnames) / 60:.1f} min)")
    before, after = times.values()
    difference = (classifiers["all 77 positions"] - classifiers["up to the longest EOT"]).abs().max().item()
    print(f"speed-up {before / after:.2f}x; classifiers differ by at most {difference:.1e}")
    return {"model": args.model, "prompts": prompts, "seconds_before": before, "seconds_after": after,
            "speedup": before / after, "max_abs_difference": difference}


if __name__ == "__main__":
    run_main(main)
