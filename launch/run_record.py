"""What a run writes besides checkpoints: `config.json`, `metrics.jsonl` and TensorBoard events.

`config.json` holds the resolved experiment, `recipe_sha256`, git commit, library versions, world
size, parameter counts and FLOPs per sample, so every number of the run can be traced back.
`metrics.jsonl` has one JSON object per log step (and per evaluation) that `results.report` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class MetricsLog:
    """Appends metrics to `metrics.jsonl` and TensorBoard; only the main process makes one."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict) -> None:
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

