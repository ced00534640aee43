"""Training and inference throughput of any tower pair, against open_clip's own ViT-B-32 in the same run.

Both models get the same batch (random images at each model's size, real tokenised captions), the same
training step (forward, open_clip's ClipLoss, backward, AdamW step) and the same inference step
(encode_image + encode_text without gradients). Steps alternate between the two models so a change in
machine load hits both alike; each figure is the median of ``--steps`` timed steps after ``--warmup``.
On CUDA the towers run under bf16 autocast (``--precision auto``) and every step ends in a synchronize.
Prints samples/s, their ratio (ours / reference), parameters and GFLOPs per sample.

    python -m benchmarks.throughput --image-tower mixer --text-tower mixer --variant B/32 --batch-size 32
    python -m benchmarks.throughput --image-tower mixer --text-tower transformer --variant tiny \\
        --batch-size 8 --reference none
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

import towers
from benchmarks.provenance import add_output_arguments, fail, finish
from towers.profile import image_size_of

MODES = ("train", "infer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Contender:
    """One model with its batch, optimizer and the two step functions being timed."""

    def __init__(self, label: str, model: torch.nn.Module, tokenizer: Callable, batch_size: int,
                 device: torch.device, precision: str, seed: int = 0):
        import open_clip

        self.label, self.model, self.device = label, model.to(device), device
        image_size = image_size_of(model)
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
        captions = [f"a photo of object number {i}, seen from the side" for i in range(batch_size)]
        self.tokens = tokenizer(captions).to(device)
        self.loss = open_clip.ClipLoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-5, weight_decay=0.1)
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                         else contextlib.nullcontext())
        self.times: dict[str, list[float]] = {mode: [] for mode in MODES}

    def train_step(self) -> None:
        self.model.train()
        with self.autocast, towers.attention_kernels(self.device):
            image_features = self.model.encode_image(self.images, normalize=True)
            text_features = self.model.encode_text(self.tokens, normalize=True)
            loss = self.loss(image_features, text_features, self.model.logit_scale.exp())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def infer_step(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast, towers.attention_kernels(self.device):
            self.model.encode_image(self.images, normalize=True)
            self.model.encode_text(self.tokens, normalize=True)

    def timed(self, mode: str, record: bool) -> None:
        step = self.train_step if mode == "train" else self.infer_step
        _sync(self.device)
        start = time.perf_counter()
        step()
        _sync(self.device)
        if record:
            self.times[mode].append(time.perf_counter() - start)


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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-tower", required=True, help="image tower family (e.g. mixer, transformer)")
    parser.add_argument("--text-tower", required=True, help="text tower family (e.g. mixer, transformer)")
    parser.add_argument("--variant", default="B/32",
                        help="size variant (tiny, S/32, B/32, B/16, ...) (default: %(default)s)")
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
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for weights and inputs (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import open_clip

    import towers

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2 (the contrastive loss needs negatives)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    name = towers.model_name(args.image_tower, args.text_tower, args.variant)
    if name not in towers.available_models():
        fail(f"--image-tower {args.image_tower} --text-tower {args.text_tower} --variant {args.variant}: "
             f"no such model (families {sorted(towers.FAMILIES)}; models: "
             f"{', '.join(towers.available_models())})")
    if args.reference != "none" and args.reference not in open_clip.list_models():
        fail(f"--reference {args.reference}: not an open_clip architecture (e.g. ViT-B-32) or 'none'")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")

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
    settings = {key: getattr(args, key) for key in ("image_tower", "text_tower", "variant", "batch_size",
                                                    "steps", "warmup", "reference", "seed")}
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
    main()
