"""A full disk at a checkpoint (launch.checkpointing.CheckpointWriter, launch/train.py): injected into
`torch.save`, and real (a small tmpfs in a private mount namespace). Part of the faults of
tests/test_faults.py; docs/training-at-scale.md's "Faults" table reports what they print."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_faults import REPO, _logged_steps
from test_multinode import TINY, node_env

import towers
from launch import train


def _args(runs: Path, name: str, *extra: str) -> list[str]:
    return [*TINY, "--batch-size", "16", "--runs-dir", str(runs), "--name", name, *extra]


def _full_disk_at(steps: set[int], monkeypatch) -> list[int]:
    """torch.save fails with ENOSPC, after writing part of the file, for the checkpoints of `steps`."""
    original, seen = torch.save, []

    def save(payload, f, *args, **kwargs):
        if isinstance(payload, dict) and payload.get("step") in steps:
            seen.append(payload["step"])
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(payload, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return seen


def test_a_full_disk_at_a_checkpoint_ends_the_run_in_one_line_with_latest_readable(tmp_path, monkeypatch,
                                                                                  capsys):
    # The write of step 4 fails in the background; the run ends at the next log step (5), not later
    seen = _full_disk_at({4}, monkeypatch)
    assert train.main(_args(tmp_path, "full", "--steps", "8", "--save-every", "2")) == 1
    assert seen == [4]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "checkpoint of step 4 not written" in errors[0], errors
    assert "No space left on device" in errors[0] and "`latest` names step_00000002.pt" in errors[0]
    assert max(_logged_steps(tmp_path / "full")) == 5
    folder = tmp_path / "full" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step_00000002.pt"]  # no torn temp file
    assert (folder / "latest").read_text().strip() == "step_00000002.pt"
    assert towers.read_checkpoint(folder / "step_00000002.pt")["step"] == 2


FULL_DISK_RUN = """
mount -t tmpfs -o size=100m tmpfs "$RUNS" || exit 99
start=$(date +%s)
timeout 240 "$PYTHON" launch/train.py "$@" --runs-dir "$RUNS" > "$OUT/log" 2>&1
echo $? > "$OUT/rc"
echo $(( $(date +%s) - start )) > "$OUT/seconds"
cp -r "$RUNS/full/checkpoints" "$RUNS/full/metrics.jsonl" "$OUT/"
"""


@pytest.mark.slow
def test_a_real_full_disk_ends_the_run_in_one_line_with_latest_readable(tmp_path):
    """A 100 MB tmpfs holds one 66 MB checkpoint of the tiny run, not two: the second `torch.save`
    fails inside its zip writer (a RuntimeError raised while handling ENOSPC), not at an OSError an
    injected fault would raise. The tmpfs is mounted in a private mount namespace (`unshare -m`)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (`unshare -m` needs root or user namespaces)")
    runs, out = tmp_path / "runs", tmp_path / "out"
    runs.mkdir()
    out.mkdir()
    env = {**node_env(), "RUNS": str(runs), "OUT": str(out), "PYTHON": sys.executable}
    subprocess.run(["unshare", "-m", "sh", "-c", FULL_DISK_RUN, "sh", *TINY, "--steps", "8",
                    "--save-every", "2", "--name", "full"], cwd=REPO, env=env, check=True, timeout=300)
    rc, seconds, log = (out / "rc").read_text().strip(), (out / "seconds").read_text().strip(), \
        (out / "log").read_text()
    print(f"a real full disk: exit status {rc} after {seconds} s (start-up included)")
    assert rc == "1", log[-2000:]  # 124: still alive at the timeout (the hang of the zip writer's error)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in log, log[-2000:]
    assert "checkpoint of step 4 not written" in errors[0] and "No space left on device" in errors[0]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_00000002.pt"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002.pt"
    assert towers.read_checkpoint(out / "checkpoints" / "step_00000002.pt")["step"] == 2


def test_a_full_disk_at_the_last_checkpoint_exits_1_with_latest_readable(tmp_path, monkeypatch, capsys):
    _full_disk_at({4}, monkeypatch)
    assert train.main(_args(tmp_path, "last", "--steps", "4", "--save-every", "2")) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "final checkpoint (step 4) was not written" in errors[0], errors
    folder = tmp_path / "last" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step_00000002.pt"]  # no torn temp file
    assert (folder / "latest").read_text().strip() == "step_00000002.pt"
    assert towers.read_checkpoint(folder / "step_00000002.pt")["step"] == 2
