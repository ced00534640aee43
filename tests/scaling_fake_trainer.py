"""A stand-in for launch/train.py in the sweep tests: writes the files a finished run leaves (config.json,
metrics.jsonl, final_eval.json, the trunk's kept checkpoints) in milliseconds, with a toy top-1 that
follows a known saturating law of compute, plus an lr penalty whose optimum differs per family."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

GFLOPS = {"w64": 0.2, "w96": 0.43, "w128": 0.74, "w192": 1.6, "w256": 2.8}  # train GFLOPs per sample
BEST_LR = {"transformer": 1e-3, "mixer": 2e-3}
LAW = {"transformer": (30.0, 0.5, 20.0), "mixer": (25.0, 0.4, 15.0)}  # A, alpha, E_inf; C0 = 1e12


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("tower", "variant", "runs-dir", "name", "branch-from", "lr-schedule", "resume"):
        parser.add_argument(f"--{name}")
    for name in ("lr",):
        parser.add_argument(f"--{name}", type=float)
    for name in ("seed", "steps", "cooldown-steps", "batch-size", "warmup-steps"):
        parser.add_argument(f"--{name}", type=int, default=0)
    parser.add_argument("--keep-steps", type=int, nargs="+", default=[])
    args, rest = parser.parse_known_args()
    if args.branch_from and not Path(args.branch_from).is_file():
        print(f"error: --branch-from {args.branch_from}: no such checkpoint file", file=sys.stderr)
        return 2
    with open(os.environ["FAKE_TRAINER_LOG"], "a") as log:
        log.write(args.name + "\n")
    if os.environ.get("FAKE_TRAINER_FAIL") == args.name:
        print(f"error: {args.name} fails on purpose", file=sys.stderr)
        return 3
    run = Path(args.runs_dir) / args.name
    run.mkdir(parents=True, exist_ok=True)
    recipe = {"steps": args.steps, "cooldown_steps": args.cooldown_steps, "lr": args.lr, "seed": args.seed,
              "lr_schedule": args.lr_schedule, "warmup_steps": args.warmup_steps,
              "global_batch_size": args.batch_size, "extra": rest}
    sha = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    gflops = GFLOPS[args.variant]
    (run / "config.json").write_text(json.dumps({
        "name": args.name, "model_name": f"{args.tower}-{args.variant}", "recipe_sha256": sha,
        "experiment": {"image_tower": args.tower, "text_tower": args.tower, "variant": args.variant,
                       "recipe": recipe}, "recipe_identity": recipe,
        "flops_per_sample": {"train_gflops": gflops},
        "cpu_threads_env": os.environ.get("MIXCLIP_CPU_THREADS")}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": args.steps, "loss": 1.0,
                                                   "samples_per_s": 1000.0 / gflops}) + "\n")
    for step in args.keep_steps:
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / f"step_{step:08d}.pt").write_bytes(b"fake")
    a, alpha, floor = LAW[args.tower]
    compute = gflops * 1e9 * args.steps * args.batch_size
    error = a * (compute / 1e12) ** -alpha + floor + 3 * abs(math.log2(args.lr / BEST_LR[args.tower])) \
        + 0.2 * args.seed
    (run / "final_eval.json").write_text(json.dumps({"step": args.steps, "eval/toy_top1": 100 - error}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
