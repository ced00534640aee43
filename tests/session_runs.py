"""Runs that several tests compare against, made once per test session and shared by the xdist workers.

`once_per_session(what, key, cache, make)` makes a folder under the session's cache folder on first use,
under a file lock, so the other pytest-xdist worker waits for it instead of making it again (a module
fixture would run once per worker that runs one of the module's tests). Two users:
- the uninterrupted training run that the two kill-and-resume tests compare with (the trainer killed,
  tests/test_train_run.py; its DataLoader worker killed, tests/test_faults.py);
- the one- and two-process launches of tests/test_trainer_equivalence.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from test_multinode import TINY

REPO = Path(__file__).resolve().parents[1]
# 10 steps of the multi-process tests' tiny run, a checkpoint every 5: the interrupted runs stop after step 5
KILL_AND_RESUME = [*TINY, "--steps", "10", "--save-every", "5"]


def once_per_session(what: str, key: object, cache: Path, make: Callable[[Path], None]) -> Path:
    """The folder `make(folder)` filled, made once per session for (`what`, `key`) in `cache`."""
    home = cache / what / hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    with (home / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "done").exists():
            make(home)
            (home / "done").write_text(json.dumps(key))
    return home


def uninterrupted_run(args: list[str], cache: Path, env: dict[str, str]) -> Path:
    """The run folder of `launch/train.py ARGS` run to its end once in this session's `cache`."""
    def train(home: Path) -> None:
        done = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args, "--runs-dir",
                               str(home), "--name", "full"], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    return once_per_session("uninterrupted", args, cache, train) / "full"
