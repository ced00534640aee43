"""runfolder, the run folder's one owner: step listing, the `latest` pointer, atomic writes, reading
config and metrics, and that results/ reads runs through it without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runfolder import RunFolder, atomic_write, atomic_write_text, checkpoint_name, point_latest

REPO = Path(__file__).resolve().parents[1]


def test_step_files_newest_first_and_only_step_names(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    for step in (10, 2, 300):
        run.checkpoint(step).write_bytes(b"x")
    for junk in ("step_12.pt", ".step_00000400.pt.abc.tmp", "step_00000500.pt.bak", "notes.txt"):
        (run.checkpoints / junk).write_bytes(b"x")
    assert [step for step, _ in run.step_files()] == [300, 10, 2]
    assert run.checkpoint(10).name == checkpoint_name(10) == "step_00000010.pt"


def test_latest_pointer_names_a_file_and_none_removes_it(tmp_path):
    run = RunFolder(tmp_path)
    assert run.latest() is None
    run.checkpoints.mkdir()
    point_latest(run.checkpoints, run.checkpoint(7))
    assert run.latest() == run.checkpoint(7)
    assert (run.checkpoints / "latest").read_text() == "step_00000007.pt\n"
    point_latest(run.checkpoints, None)
    assert run.latest() is None


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "config.json"
    atomic_write_text(path, '{"a": 1}\n')

    def half_then_fail(f):
        f.write(b'{"a": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temporary file left


def test_reads_config_metrics_and_final_eval(tmp_path):
    run = RunFolder(tmp_path / "run")
    atomic_write_text(run.config, json.dumps({"recipe_sha256": "abc"}))
    atomic_write_text(run.metrics, '{"step": 1, "loss": 2.5}\n\n{"step": 2, "loss": 2.0}\n')
    assert run.is_run() and run.read_config()["recipe_sha256"] == "abc"
    assert [line["loss"] for line in run.read_metrics()] == [2.5, 2.0]
    assert run.read_final_eval() is None
    run.checkpoints.mkdir()
    assert RunFolder.of_checkpoint(run.checkpoint(5)) == RunFolder(run.path.resolve())
    assert RunFolder.of_checkpoint(tmp_path / "elsewhere.pt") is None


def test_results_reads_runs_without_torch():
    code = ("import sys, runfolder, results.runs, results.tables; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
