"""The sweep's wall time on this machine, from a few timed training steps per family and size.

    python -m results.drivers.scaling_sweep estimate  # writes <out>/estimate.json, prints a table

For every (family, size) it trains one short run through the sweep's own launcher and recipe
(`--steps N --log-every N/2`): the second logged interval gives seconds per step (the first holds
the warm-up), the rest of the run's wall time is its fixed cost (start-up, toy data, the final
zero-shot evaluation). The plan's time is then the sum over its runs of fixed cost + trained steps
(a trunk trains its steps, a branch only its cooldown, a fresh run all of its steps). On a shared
machine the number is an upper bound: it says so, with the load average it ran under.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results.scaling_spec import PHASES, Target, families, plan, train_flags
from runfolder import RunFolder

REPO = Path(__file__).resolve().parents[2]


def time_size(t: Target, family: str, size: str, steps: int, launcher: list[str] | None) -> dict:
    """{seconds_per_step, fixed_seconds, wall_seconds} of one short run of the sweep's recipe."""
    runs = Path(tempfile.mkdtemp(prefix="scaling-estimate-"))
    try:
        flags = {**t.recipe, "tower": family, "variant": size, "lr": t.tune_lrs[0],
                 "lr_schedule": "constant", **t.run_options, "steps": steps, "warmup_steps": 1,
                 "log_every": max(1, steps // 2), "save_every": 0}
        command = [*(launcher or [sys.executable, "launch/train.py"]), *train_flags(flags),
                   "--runs-dir", str(runs), "--name", "timed"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"error: timing {family} {size} failed ({done.returncode}): {done.stderr[-500:]}")
        lines = RunFolder(runs / "timed").read_metrics()
        rate = [line["samples_per_s"] for line in lines if "samples_per_s" in line][-1]
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    per_step = t.global_batch / rate
    return {"seconds_per_step": per_step, "fixed_seconds": max(0.0, wall - steps * per_step),
            "wall_seconds": wall}


def plan_seconds(spec: dict, t: Target, timed: dict[tuple[str, str], dict]) -> dict:
    """Estimated seconds per phase of the whole plan (lr choice: any, it does not change the cost)."""
    runs_dir = Path("runs")
    best = {f: t.tune_lrs[0] for f in families(spec)}
    seen, seconds = set(), {}
    for phase in PHASES:
        total = 0.0
        for runs in plan(spec, t, phase, runs_dir, None if phase == "tune" else best):
            for run in runs:
                if run.name in seen:  # the tuning chains of the chosen lr are the grid's chains at that size
                    continue
                seen.add(run.name)
                cost = timed[(run.family, run.size)]
                trained = run.flags["steps"] - (run.branch_step or 0)
                total += cost["fixed_seconds"] + trained * cost["seconds_per_step"]
        seconds[phase] = total
    return seconds


def estimate(spec: dict, t: Target, out: Path, launcher: list[str] | None, steps: int) -> dict:
    import torch  # only for the CPU's name in the record; results otherwise reads files

    load = os.getloadavg()[0]
    timed = {(f, size): time_size(t, f, size, steps, launcher) for f in families(spec) for size in t.sizes}
    seconds = plan_seconds(spec, t, timed)
    record = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
              "load_average_at_start": load, "timed_steps": steps,
              "per_size": {f"{f} {size}": v for (f, size), v in timed.items()},
              "plan_hours": {phase: s / 3600 for phase, s in seconds.items()},
              "total_hours": sum(seconds.values()) / 3600}
    out.mkdir(parents=True, exist_ok=True)
    (out / "estimate.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'family size':<22}{'s/step':>10}{'fixed s':>10}")
    for name, v in record["per_size"].items():
        print(f"{name:<22}{v['seconds_per_step']:>10.3f}{v['fixed_seconds']:>10.1f}")
    print("plan: " + ", ".join(f"{p} {h:.2f} h" for p, h in record["plan_hours"].items())
          + f"; total {record['total_hours']:.2f} h on {record['cpu_capability']} ({os.cpu_count()} cores, "
          f"load average {load:.1f} at the start: shared, so an upper bound)")
    return record
