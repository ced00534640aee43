"""N processes x batch b == 1 process x batch N*b == accumulation: same losses and weights after 3 steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_multinode import free_port

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_step_worker.py"
TOLERANCE = 1e-5


def _run(tmp_path: Path, name: str, processes: int, *extra: str) -> dict:
    out = tmp_path / f"{name}.pt"
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(REPO / "launch" / "accelerate" / "cpu.yaml"),
                "--num_processes", str(processes), "--main_process_port", str(free_port())]
    result = subprocess.run(launcher + [str(WORKER), "--out", str(out), *extra], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = torch.load(out, weights_only=True)
    # the launcher really started `processes` processes that joined one group (else 2 x 4 == 1 x 8
    # would hold trivially: accelerate starts one process for a MULTI_CPU config without mpirun)
    assert written["world"] == processes, (written["world"], written["distributed_type"])
    return written


def _max_param_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("single"), "single", 1)


@pytest.mark.slow
@pytest.mark.parametrize("local_loss", [False, True])
def test_two_gloo_processes_equal_one_process(single, tmp_path, local_loss):
    extra = ["--local-loss"] if local_loss else []
    two = _run(tmp_path, "two", 2, *extra)
    loss_diff = max(abs(a - b) for a, b in zip(single["losses"], two["losses"], strict=True))
    param_diff = _max_param_diff(single["state_dict"], two["state_dict"])
    print(f"2x4 vs 1x8 (local_loss={local_loss}): loss diff {loss_diff:.2e}, param diff {param_diff:.2e}")
    assert loss_diff <= TOLERANCE and param_diff <= TOLERANCE
    # and the run moved: equal weights after 0 steps would prove nothing
    assert single["losses"][0] != single["losses"][-1]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_accumulation_equals_the_whole_batch(single, tmp_path, processes):
    accum = _run(tmp_path, "accum", processes, "--accum", "2")
    loss_diff = max(abs(a - b) for a, b in zip(single["losses"], accum["losses"], strict=True))
    param_diff = _max_param_diff(single["state_dict"], accum["state_dict"])
    print(f"{processes} process(es), accum 2: loss diff {loss_diff:.2e}, param diff {param_diff:.2e}")
    assert loss_diff <= TOLERANCE and param_diff <= TOLERANCE
