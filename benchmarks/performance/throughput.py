"""Training and inference throughput of any tower pair, against open_clip's own ViT-B-32 in the same run.

Both models get the same batch (random images at each model's size, real tokenised captions), the same
training step (the trainer's own `launch.trainer.ContrastiveStep` on the default `Recipe`: forward,
fp32 ClipLoss, backward, loss all-reduce, gradient clipping, fused AdamW over the trainer's parameter
groups, temperature clamp; `tests/test_bench_throughput.py` checks that one step leaves the weights a
trainer step leaves) and the same inference step (encode_image + encode_text without gradients). It
is the one benchmark that imports `launch`: what it times is launch's step.
Steps alternate between the two models so a change in machine load hits both alike; each figure is
the median of ``--steps`` timed steps after ``--warmup``. On CUDA the towers run under bf16 autocast
(``--precision auto``) and every step ends in a synchronize. Prints samples/s, their ratio (ours /
reference), parameters and GFLOPs per sample. ``benchmarks.performance.gpu_check`` times the same step
on a GPU, compiled too, with MFU and peak memory.

    python -m benchmarks.performance.throughput --model mixer-B-32 --batch-size 32
    python -m benchmarks.performance.throughput --model mixer+transformer-tiny --batch-size 8 --reference none
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import open_clip
import torch
from accelerate import Accelerator
from tqdm import tqdm

import towers
from benchmarks.provenance import add_output_arguments, fail, finish
from benchmarks.runner_flags import (
    add_device_argument,
    add_precision_argument,
)
from launch.config import Recipe
from launch.trainer import ContrastiveStep, build_optimizer
from runfolder.errors import OneLineParser, run_main
from towers.precision import resolve_precision
from towers.profile import image_size_of

MODES = ("train", "infer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Contender:
    """One model with its batch and the two steps being timed. The training step is the trainer's own
    (`launch.trainer.ContrastiveStep` with `build_optimizer`'s parameter groups, on `recipe`): AdamW
    with weight decay on >= 2-d weights, the fp32 loss, the loss all-reduce, gradient clipping and the
    temperature clamp, so what is timed is what trains."""

    def __init__(self, label: str, model: torch.nn.Module, tokenizer: Callable, batch_size: int,
                 device: torch.device, precision: str, seed: int = 0, recipe: Recipe | None = None):
        self.label, self.model, self.device = label, model.to(device), device
        self.recipe = recipe or Recipe()
        image_size = image_size_of(model)
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
        captions = [f"a photo of object number {i}, seen from the side" for i in range(batch_size)]
        self.tokens = tokenizer(captions).to(device)
        # One process, no DDP wrapper; the precision is this contender's, not the process-wide
        # AcceleratorState's (fixed by the first Accelerator a process makes).
        self.accelerator = Accelerator(cpu=device.type == "cpu")
        self.optimizer = build_optimizer(self.model, self.recipe)
        self.autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16"
                         else contextlib.nullcontext)
        self.step = self._training_step(self.model)
        self.steps_done = 0  # the lr schedule's step
        self.times: dict[str, list[float]] = {mode: [] for mode in MODES}
        self.peak_step_bytes = 0  # CUDA: the most memory one training step added over what it started with

    def _training_step(self, forward_model: torch.nn.Module) -> ContrastiveStep:
        """The trainer's step over this model's weights and optimizer, its forward run by `forward_model`
        (the model, or the model compiled) at this contender's precision."""
        return ContrastiveStep(self.accelerator, forward_model, self.optimizer, self.recipe,
                               autocast=self.autocast)

    def compile(self, backend: str = "inductor") -> None:
        """Time the torch.compile'd forward from now on (the first step compiles; keep it in warm-up)."""
        self.step = self._training_step(torch.compile(self.model, backend=backend))
        self.times = {mode: [] for mode in MODES}
        self.peak_step_bytes = 0

    def state_bytes(self) -> int:
        """Weights and optimizer state of this model (what it holds between steps)."""
        tensors = list(self.model.parameters()) + [value for state in self.optimizer.state.values()
                                                   for value in state.values() if torch.is_tensor(value)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def train_step(self) -> None:
        self.model.train()
        self.step([(self.images, self.tokens)], self.steps_done)
        self.steps_done += 1

    def infer_step(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast(), towers.attention_kernels(self.device):
            self.model.encode_image(self.images, normalize=True)
            self.model.encode_text(self.tokens, normalize=True)

    def timed(self, mode: str, record: bool) -> None:
        step = self.train_step if mode == "train" else self.infer_step
        _sync(self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        start = time.perf_counter()
        step()
        _sync(self.device)
        if record:
            self.times[mode].append(time.perf_counter() - start)
            if cuda and mode == "train":
                added = torch.cuda.max_memory_allocated(self.device) - before
                self.peak_step_bytes = max(self.peak_step_bytes, added)


def measure(contenders: list[Contender], modes: tuple[str, ...], steps: int, warmup: int) -> None:
    """Alternate the contenders step by step; the first ``warmup`` steps of each mode are not recorded."""
    total = len(modes) * (steps + warmup) * len(contenders)
    with tqdm(total=total, desc="throughput", unit="step") as bar:
        for mode in modes:
            for i in range(warmup + steps):
                for contender in contenders:
                    bar.set_postfix_str(f"{mode} {contender.label}")
                    contender.timed(mode, record=i >= warmup)
                    bar.update()


def summarise(contender: Contender, batch_size: int, modes: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": contender.label}
    for mode in modes:
        median = statistics.median(contender.times[mode])
        row[f"{mode}_step_s"] = median
        row[f"{mode}_samples_per_s"] = batch_size / median
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.performance.throughput",
                           description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", metavar="NAME",
                        help="a towers model name, e.g. mixer-B-32 or transformer+mixer-tiny (random "
                             "weights; `python -m towers` lists them)")
    # the spelling before the runner convention, one version: --image-tower X --text-tower Y --variant V
    for old in ("--image-tower", "--text-tower", "--variant"):
        parser.add_argument(old, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32,
                        help="samples per step, same for both models (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per mode (median reported) (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps per mode first (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to time")
    parser.add_argument("--reference", default="ViT-B-32",
                        help="open_clip architecture timed alongside (random weights), or 'none' "
                             "(default: %(default)s)")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for weights and inputs (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def _model_name(args: argparse.Namespace) -> str:
    old = (args.image_tower, args.text_tower, args.variant)
    if args.model and any(old):
        fail("--model NAME replaces --image-tower/--text-tower/--variant: give one spelling")
    if args.model:
        return args.model
    if not (args.image_tower and args.text_tower):
        fail("--model NAME is required (e.g. mixer-B-32; `python -m towers` lists them)")
    print("warning: --image-tower/--text-tower/--variant are deprecated; use --model NAME", file=sys.stderr)
    return towers.model_name(args.image_tower, args.text_tower, args.variant or "B/32")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2 (the contrastive loss needs negatives)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    name = _model_name(args)
    if name not in towers.available_models():
        fail(f"--model {name}: no such model (families {sorted(towers.FAMILIES)}; models: "
             f"{', '.join(towers.available_models())})")
    if args.reference != "none" and args.reference not in open_clip.list_models():
        fail(f"--reference {args.reference}: not an open_clip architecture (e.g. ViT-B-32) or 'none'")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(args.precision, device.type)[0]

    torch.manual_seed(args.seed)
    ours = towers.create_model(name)
    context = ours.context_length
    contenders = [Contender(name, ours, lambda texts: towers.tokenize(texts, context), args.batch_size,
                            device, precision, args.seed)]
    profiles = {name: towers.profile(ours)}
    if args.reference != "none":
        torch.manual_seed(args.seed)
        reference = open_clip.create_model(args.reference, pretrained=None)
        label = f"open_clip {args.reference}"
        contenders.append(Contender(label, reference, open_clip.get_tokenizer(args.reference),
                                    args.batch_size, device, precision, args.seed))
        profiles[label] = towers.profile(reference)

    modes = tuple(args.modes)
    measure(contenders, modes, args.steps, args.warmup)
    rows = [{**profiles[c.label], **summarise(c, args.batch_size, modes)} for c in contenders]  # label wins
    result: dict[str, Any] = {"rows": rows, "batch_size": args.batch_size, "device": str(device),
                              "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                              else "cpu"),
                              "threads": torch.get_num_threads(), "precision": precision}
    if len(rows) == 2:
        result["ratios"] = {f"{mode}_samples_per_s": rows[0][f"{mode}_samples_per_s"] /
                            rows[1][f"{mode}_samples_per_s"] for mode in modes}
        result["ratios"].update(total_params=rows[0]["total_params"] / rows[1]["total_params"],
                                gflops=(rows[0]["image_gflops"] + rows[0]["text_gflops"]) /
                                (rows[1]["image_gflops"] + rows[1]["text_gflops"]))
    print(format_table(result, modes))
    model_id = f"{name}-bs{args.batch_size}-{device.type}"
    settings = {"model": name, **{key: getattr(args, key) for key in ("batch_size", "steps", "warmup",
                                                                      "reference", "seed")}}
    return finish("throughput", result, args, model_info={"model_id": model_id, "architecture": name},
                  settings={**settings, "modes": list(modes), "precision": precision})


def format_table(result: dict[str, Any], modes: tuple[str, ...]) -> str:
    header = f"{'model':<28}{'params M':>10}{'GFLOPs/sample':>15}" + "".join(f"{m + ' samples/s':>18}"
                                                                             for m in modes)
    lines = [f"batch {result['batch_size']} on {result['device_name']} ({result['precision']})", header]
    for row in result["rows"]:
        gflops = row["image_gflops"] + row["text_gflops"]
        lines.append(f"{row['model']:<28}{row['total_params'] / 1e6:>10.2f}{gflops:>15.2f}"
                     + "".join(f"{row[f'{m}_samples_per_s']:>18.2f}" for m in modes))
    if "ratios" in result:
        ratios = result["ratios"]
        lines.append(f"{'ratio (ours / reference)':<28}{ratios['total_params']:>10.3f}"
                     f"{ratios['gflops']:>15.3f}"
                     + "".join(f"{ratios[f'{m}_samples_per_s']:>18.3f}" for m in modes))
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
