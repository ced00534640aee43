"""What a run writes besides checkpoints: `config.json`, `metrics.jsonl` and TensorBoard events.

`config.json` holds the resolved experiment, `recipe_sha256`, git commit, library versions, world
size, parameter counts and FLOPs per sample, so every number of the run can be traced back.
`metrics.jsonl` has one JSON object per log step (and per evaluation) that `results.report` reads;
each carries `time` (ISO 8601 wall clock, UTC) and `elapsed_s` (seconds since this launch started).
"""

from __future__ import annotations

import datetime
import json
import shlex
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class MetricsLog:
    """Appends metrics to `metrics.jsonl` and TensorBoard; only the main process makes one."""

    def __init__(self, run_dir: Path, started: float):
        self.started = started  # time.time() when this launch started
        self.path = run_dir / "metrics.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        now = time.time()
        wall = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="seconds")
        record = {**record, "time": wall, "elapsed_s": round(now - self.started, 3)}
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()
        step = record["step"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                self.tensorboard.add_scalar(key, value, step)
            elif isinstance(value, dict):
                for sub, number in value.items():
                    if isinstance(number, (int, float)):
                        self.tensorboard.add_scalar(f"{key}/{sub}", number, step)

    def close(self) -> None:
        self.file.close()
        self.tensorboard.close()



def next_commands(run_dir: Path) -> str:
    """What a person does with a finished run: where it is, how to score it and compare it."""
    run = shlex.quote(str(run_dir))
    return "\n".join([
        f"run written to {run_dir}/ (config.json, metrics.jsonl, final_eval.json, checkpoints/, "
        "tensorboard/)",
        "next: score it",
        f"  python -m benchmarks.imagenet_zeroshot --model {run} --dataset toy",
        f"  python -m benchmarks.sts --model {run}",
        "and compare it with other runs of the same recipe (another tower, other seeds):",
        f"  python -m results.report {run} runs/OTHER_RUN ... --out report/",
    ])
