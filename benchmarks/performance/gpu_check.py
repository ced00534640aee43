"""The GPU check: what one GPU does with the training step, the loader and a short run, in one command.

    python -m benchmarks.performance.gpu_check  # one CUDA GPU; under 8 minutes; prints + JSON
    python -m benchmarks.performance.gpu_check --peak-tflops 600  # a GPU missing from PEAK_BF16_TFLOPS

In one run, at B/32, bf16 autocast, batch 256:
1. step: training samples/s of `mixer-B-32`, `transformer-B-32` and open_clip's own `ViT-B-32` through
   the same step (`benchmarks.performance.throughput.Contender`), measured alternately, eager and then
   torch.compile'd; the ratios; the peak memory a step adds to the model's weights and optimizer state;
2. MFU: train FLOPs per sample (torch's FLOP counter, 3 x forward) x samples/s / the device's dense
   bf16 peak (PEAK_BF16_TFLOPS, or `--peak-tflops`);
3. loader: `python -m benchmarks.performance.loader_bench` at 224 px on JPEG shards generated here, 0..N
   workers, its samples/s against the step's: whether the loader keeps up; the same with `--decoder device`
   (workers ship the JPEG bytes, this GPU decodes them with nvJPEG and crops them, docs/gpu_path.md);
4. a `--train-steps` (200) step training run of each tower through `launch/train.py` on those shards,
   the committed `launch/configs/laion400m-b32.yaml` recipe cut to one GPU's batch and those steps
   (samples/s and data-wait fraction from its metrics.jsonl).
The JSON result goes to results/scores/gpu_check/. Without a CUDA device it says so in one line and
exits 2; `--device cpu --variant tiny` runs the same code at toy size (for the tests only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import open_clip
import torch

import towers
from benchmarks.data.files import REPO_ROOT
from benchmarks.data.jpeg_shards import write_jpeg_shards
from benchmarks.performance import throughput
from benchmarks.provenance import add_output_arguments, fail, finish
from runfolder import RunFolder
from runfolder.errors import OneLineParser, run_main
from towers.precision import resolve_precision

GPU_CHECK_RECIPE = REPO_ROOT / "launch" / "configs" / "laion400m-b32.yaml"  # the run of step 4

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets; first match wins.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
TOWERS = ("mixer", "transformer")


def peak_tflops(device_name: str, override: float | None) -> float | None:
    """`override`, else the table's peak for this device name, else None (MFU is then not reported)."""
    if override:
        return override
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()), None)


def mfu(train_gflops: float, samples_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (None without a peak)."""
    return None if not peak else train_gflops * 1e9 * samples_per_s / (peak * 1e12)


def build_contenders(args: argparse.Namespace, device: torch.device, precision: str) -> list:
    contenders = []
    for tower in TOWERS:
        torch.manual_seed(args.seed)
        model = towers.create_model(towers.model_name(tower, tower, args.variant))
        context = model.context_length
        contenders.append(throughput.Contender(model.model_name, model,
                                               lambda texts, n=context: towers.tokenize(texts, n),
                                               args.batch_size, device, precision, args.seed))
    torch.manual_seed(args.seed)
    reference = open_clip.create_model(args.reference, pretrained=None)
    contenders.append(throughput.Contender(f"open_clip {args.reference}", reference,
                                           open_clip.get_tokenizer(args.reference), args.batch_size,
                                           device, precision, args.seed))
    return contenders


def measure_steps(contenders: list, args: argparse.Namespace, peak: float | None) -> dict[str, Any]:
    """Eager, then compiled: samples/s, MFU and peak memory per model; the ratios of each phase."""
    rows = {c.label: {"model": c.label, **_profile(c)} for c in contenders}
    phases = ("eager", "compiled")
    for phase in phases:
        if phase == "compiled":
            for contender in contenders:
                contender.compile(args.compile_backend)
        started = time.perf_counter()
        throughput.measure(contenders, ("train",), args.steps, args.warmup)
        for contender in contenders:
            row = rows[contender.label]
            rate = throughput.summarise(contender, args.batch_size, ("train",))["train_samples_per_s"]
            row[phase] = {"samples_per_s": rate, "mfu": mfu(row["train_gflops"], rate, peak),
                          "peak_gib": (contender.peak_step_bytes + contender.state_bytes()) / 2**30
                          if contender.device.type == "cuda" else None}
        print(f"step, {phase}: measured in {time.perf_counter() - started:.0f} s", flush=True)
    mixer, transformer, reference = (rows[c.label] for c in contenders)
    ratios = {phase: {"mixer_over_transformer": mixer[phase]["samples_per_s"] /
                      transformer[phase]["samples_per_s"],
                      "transformer_over_open_clip": transformer[phase]["samples_per_s"] /
                      reference[phase]["samples_per_s"]} for phase in phases}
    return {"rows": list(rows.values()), "ratios": ratios}


def _profile(contender) -> dict[str, float]:
    counts = towers.profile(contender.model)  # ours and open_clip's alike
    return {"total_params": counts["total_params"],
            "train_gflops": 3 * (counts["image_gflops"] + counts["text_gflops"])}  # backward = 2 x forward


def _run(command: list[str], what: str, timeout: float) -> float:
    """Run a subprocess from the repository root; its output passes through. Returns its wall time."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' '.join(command)}")
    return time.perf_counter() - started


def measure_loader(spec: str, work: Path, args: argparse.Namespace, image_size: int,
                   decoder: str = "pil", device: str = "cpu") -> dict[str, Any]:
    """`python -m benchmarks.performance.loader_bench` with this decoder (`device`: decoding on `device`)."""
    out = work / f"loader-{decoder}.json"
    _run([sys.executable, "-m", "benchmarks.performance.loader_bench", "--data", spec,
          "--workers", str(args.workers),
          "--image-size", str(image_size), "--batch-size", str(args.batch_size),
          "--batches", str(args.loader_batches), "--shuffle-buffer", str(args.batch_size),
          "--decoder", decoder, "--decode-device", device, "--json", str(out)], f"loader bench ({decoder})",
         timeout=600)
    result = json.loads(out.read_text())
    return {"image_size": image_size, "decoder": decoder, "decode_device": device,
            "rows": [{k: row[k] for k in ("workers", "samples_per_s")} for row in result["loader"]]}


def training_run(tower: str, spec: str, work: Path, args: argparse.Namespace, precision: str) -> dict:
    name = f"gpu-check-{tower}"
    log_every = max(1, args.train_steps // 10)
    # the LAION B/32 recipe file, shortened to a few steps of one GPU's batch on the generated shards
    seconds = _run([sys.executable, str(REPO_ROOT / "launch" / "train.py"), "--config", str(GPU_CHECK_RECIPE),
                    "--tower", tower, "--variant", args.variant, "--precision", precision,
                    "--batch-size", str(args.batch_size), "--steps", str(args.train_steps),
                    "--warmup-steps", str(min(20, args.train_steps)), "--workers", str(args.workers),
                    "--train-data", spec, "--save-every", "0", "--eval-every", "0", "--eval-samples", "64",
                    "--log-every", str(log_every),
                    "--runs-dir", str(work / "runs"), "--name", name], f"training run ({tower})", timeout=900)
    lines = RunFolder(work / "runs" / name).read_metrics()
    steps = [line for line in lines if "loss" in line]
    steady = steps[1:] or steps  # the first interval holds start-up (and cuDNN/allocator warm-up)
    return {"tower": tower, "steps": args.train_steps, "wall_s": seconds, "final_loss": steps[-1]["loss"],
            "samples_per_s": statistics.median(line["samples_per_s"] for line in steady),
            "data_wait_frac": statistics.median(line["data_wait_frac"] for line in steady)}


def loader_verdict(loader: dict, steps: dict) -> dict[str, Any]:
    """The loader's best rate over worker counts against the fastest step (the hardest to feed)."""
    best = max(loader["rows"], key=lambda row: row["samples_per_s"])
    fastest = max(((row["model"], phase, row[phase]["samples_per_s"]) for row in steps["rows"]
                   for phase in ("eager", "compiled")), key=lambda item: item[2])
    return {"best_workers": best["workers"], "best_samples_per_s": best["samples_per_s"],
            "fastest_step": {"model": fastest[0], "phase": fastest[1], "samples_per_s": fastest[2]},
            "loader_over_step": best["samples_per_s"] / fastest[2],
            "keeps_up": best["samples_per_s"] >= fastest[2]}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def format_report(result: dict[str, Any]) -> str:
    peak = result["peak_tflops"]
    lines = [f"GPU check on {result['device_name']}: {result['variant']}, {result['precision']}, batch "
             f"{result['batch_size']} per GPU; "
             + (f"peak {peak:g} TFLOP/s" if peak else "peak unknown: no MFU (pass --peak-tflops)"),
             f"{'model':<24}{'params M':>9}{'GFLOP/sample':>13} | {'eager/s':>9}{'MFU':>7}{'peak GiB':>9} | "
             f"{'compiled/s':>10}{'MFU':>7}{'peak GiB':>9}"]
    for row in result["steps"]["rows"]:
        cells = []
        for phase in ("eager", "compiled"):
            p = row[phase]
            gib = "n/a" if p["peak_gib"] is None else f"{p['peak_gib']:.1f}"
            cells.append(f"{p['samples_per_s']:>{9 if phase == 'eager' else 10}.1f}{_percent(p['mfu']):>7}"
                         f"{gib:>9}")
        lines.append(f"{row['model']:<24}{row['total_params'] / 1e6:>9.1f}{row['train_gflops']:>13.2f} | "
                     + " | ".join(cells))
    for phase, ratios in result["steps"]["ratios"].items():
        lines.append(f"ratios, {phase}: mixer / transformer {ratios['mixer_over_transformer']:.3f}; "
                     f"transformer / open_clip {ratios['transformer_over_open_clip']:.3f}")
    loader, verdict = result["loader"], result["loader_verdict"]
    lines.append(f"loader ({loader['image_size']} px JPEG shards, batch {result['batch_size']}): "
                 + ", ".join(f"{row['workers']} workers {row['samples_per_s']:.0f}/s"
                             for row in loader["rows"]))
    fastest = verdict["fastest_step"]
    lines.append(f"loader best {verdict['best_samples_per_s']:.0f}/s ({verdict['best_workers']} workers) = "
                 f"{verdict['loader_over_step']:.2f} x the fastest step ({fastest['model']}, "
                 f"{fastest['phase']}, {fastest['samples_per_s']:.0f}/s): "
                 f"{'keeps up' if verdict['keeps_up'] else 'does NOT keep up'}")
    decode, verdict = result["loader_device_decode"], result["device_decode_verdict"]
    lines.append(f"loader, JPEGs decoded on {decode['decode_device']} (--decode-on-device): "
                 + ", ".join(f"{row['workers']} workers {row['samples_per_s']:.0f}/s"
                             for row in decode["rows"])
                 + f"; best = {verdict['loader_over_step']:.2f} x the fastest step: "
                 + ("keeps up" if verdict["keeps_up"] else "does NOT keep up"))
    for run in result["training_runs"]:
        lines.append(f"train.py {run['tower']}, {run['steps']} steps: {run['samples_per_s']:.1f} samples/s, "
                     f"data wait {_percent(run['data_wait_frac'])}, final loss {run['final_loss']:.3f}, "
                     f"{run['wall_s']:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m benchmarks.performance.gpu_check",
                           description=__doc__.split("\n")[0])
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak in TFLOP/s (default: from the table by name)")
    parser.add_argument("--batch-size", type=int, default=256, help="per GPU (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps first; the compiled phase compiles here (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="loader bench 0..N workers; the training runs use N (default: %(default)s)")
    parser.add_argument("--loader-batches", type=int, default=10,
                        help="timed loader batches per worker count (default: %(default)s)")
    parser.add_argument("--train-steps", type=int, default=200,
                        help="steps of each launch/train.py run (default: %(default)s)")
    parser.add_argument("--shard-samples", type=int, default=4096,
                        help="JPEG samples generated for the loader and the runs (default: %(default)s)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (default: %(default)s)")
    parser.add_argument("--reference", default="ViT-B-32",
                        help="open_clip architecture (default: %(default)s)")
    parser.add_argument("--variant", default="B/32", help="tower size (default: %(default)s; tiny: tests)")
    parser.add_argument("--device", default=None, help="default: cuda, required ('cpu' only for the tests)")
    parser.add_argument("--work-dir", type=Path, default=None, help="shards and runs (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="weights and inputs (default: %(default)s)")
    add_output_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.device is None and not torch.cuda.is_available():
        fail("benchmarks.performance.gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
             "it measures a GPU, run it on one")
    device = torch.device(args.device or "cuda")
    if min(args.batch_size - 1, args.steps, args.warmup, args.train_steps, args.loader_batches,
           args.shard_samples, args.workers + 1) < 1:
        fail("--batch-size >= 2, --steps/--warmup/--train-steps/--loader-batches/--shard-samples >= 1, "
             "--workers >= 0")
    if towers.model_name("mixer", "mixer", args.variant) not in towers.available_models():
        fail(f"--variant {args.variant}: no such size (models: {', '.join(towers.available_models())})")
    if args.reference not in open_clip.list_models():
        fail(f"--reference {args.reference}: not an open_clip architecture (e.g. ViT-B-32)")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precision = resolve_precision("auto", device)[0]  # as launch/train.py resolves its default
    peak = peak_tflops(device_name, args.peak_tflops)
    started = time.perf_counter()

    contenders = build_contenders(args, device, precision)
    steps = measure_steps(contenders, args, peak)
    image_size = contenders[0].images.shape[-1]
    del contenders  # free the device for the training runs (dynamo's caches hold the models too)
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as temporary:
        work = args.work_dir or Path(temporary)
        spec = write_jpeg_shards(work / "shards", args.shard_samples, side=max(image_size + 32, 64),
                                 processes=min(8, os.cpu_count() or 1))
        loader = measure_loader(spec, work, args, image_size)
        # --decode-on-device: workers ship JPEG bytes, this device decodes (nvJPEG on CUDA) and crops.
        device_decode = measure_loader(spec, work, args, image_size, "device", str(device))
        runs = [training_run(tower, spec, work, args, precision) for tower in TOWERS]
    result = {"device_name": device_name, "variant": args.variant, "precision": precision,
              "batch_size": args.batch_size, "peak_tflops": peak, "steps": steps, "loader": loader,
              "loader_verdict": loader_verdict(loader, steps), "loader_device_decode": device_decode,
              "device_decode_verdict": loader_verdict(device_decode, steps), "training_runs": runs,
              "wall_s": time.perf_counter() - started}
    print(format_report(result))
    print(f"gpu check took {result['wall_s']:.0f} s")
    settings = {key: getattr(args, key) for key in ("batch_size", "steps", "warmup", "workers", "train_steps",
                                                    "compile_backend", "reference", "variant", "seed")}
    model_id = f"{args.variant.replace('/', '-')}-bs{args.batch_size}-{device_name.replace(' ', '_')}"
    return finish("gpu_check", result, args, model_info={"model_id": model_id, "architecture": "mixer, "
                  f"transformer, open_clip {args.reference}"}, settings=settings)


if __name__ == "__main__":
    run_main(main)
