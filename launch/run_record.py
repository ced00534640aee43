"""What a run writes besides checkpoints: `config.json`, `metrics.jsonl` and TensorBoard events.

`config.json` holds the resolved experiment, `recipe_sha256`, git commit, library versions, world
size, parameter counts and FLOPs per sample, so every number of the run can be traced back.
`metrics.jsonl` has one JSON object per log step (and per evaluation) that `results.report` reads.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

LIBRARIES = ("torch", "torchvision", "timm", "open_clip_torch", "webdataset", "accelerate", "numpy")
REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = REPO) -> str:
    """The checkout's commit (with `-dirty` when it has uncommitted changes), or `unknown`."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


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


def command_line() -> str:
    return " ".join(sys.argv)
