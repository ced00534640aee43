"""The uninterrupted training run that interrupted runs are compared with, trained once per test session.

Two tests kill a single-process run (the trainer itself, tests/test_train_run.py; its DataLoader worker,
tests/test_faults.py), resume it, and compare its weights with the same run left alone. That reference is
one run for both: trained on first use into the session's cache folder, under a file lock, so the other
pytest-xdist worker waits for it instead of training it again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# 10 steps of the default mixer at batch 8, a checkpoint every 5: the interrupted runs stop after step 5
KILL_AND_RESUME = ["--tower", "mixer", "--steps", "10", "--save-every", "5", "--batch-size", "8",
                   "--eval-samples", "16", "--workers", "1", "--log-every", "1", "--warmup-steps", "1",
                   "--cpu-threads", "1"]


def uninterrupted_run(args: list[str], cache: Path, env: dict[str, str]) -> Path:
    """The run folder of `launch/train.py ARGS` run to its end once in this session's `cache`."""
    home = cache / "uninterrupted" / hashlib.sha256(json.dumps(args).encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    with (home / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "done").exists():
            done = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args, "--runs-dir",
                                   str(home), "--name", "full"], env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, done.stderr[-2000:]
            (home / "done").write_text(json.dumps(args))
    return home / "full"
