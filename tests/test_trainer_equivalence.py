"""N processes x batch b == 1 process x batch N*b == accumulation: same losses and weights after 3 steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from session_runs import once_per_session
from test_multinode import free_port

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_step_worker.py"
TOLERANCE = 1e-5


def _run(cache: Path, processes: int, *cases: str) -> dict:
    """One launch of `processes` processes that trains every case (NAME:ACCUM[:local]) in turn; made once
    per session (tests/session_runs.py), whichever worker's test needs it first."""
    def launch(home: Path) -> None:
        launcher = [sys.executable, "-m", "accelerate.commands.launch",
                    "--config_file", str(REPO / "launch" / "accelerate" / "cpu.yaml"),
                    "--num_processes", str(processes), "--main_process_port", str(free_port())]
        case_flags = [flag for case in cases for flag in ("--case", case)]
        result = subprocess.run(launcher + [str(WORKER), "--out", str(home / "cases.pt"), *case_flags],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    written = torch.load(once_per_session("trainer-equivalence", [processes, *cases], cache, launch)
                         / "cases.pt", weights_only=True)
    # the launcher really started `processes` processes that joined one group (else 2 x 4 == 1 x 8
    # would hold trivially: accelerate starts one process for a MULTI_CPU config without mpirun)
    assert written["world"] == processes, (written["world"], written["distributed_type"])
    return written["cases"]


def _max_param_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture
def one_process(private_cache):
    return _run(private_cache, 1, "whole:1", "accum:2")


@pytest.fixture
def two_processes(private_cache):
    return _run(private_cache, 2, "global:1", "local:1:local", "accum:2")


def _differences(reference: dict, other: dict) -> tuple[float, float]:
    loss_diff = max(abs(a - b) for a, b in zip(reference["losses"], other["losses"], strict=True))
    return loss_diff, _max_param_diff(reference["state_dict"], other["state_dict"])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["global", "local", "accum"])
def test_two_gloo_processes_equal_one_process(one_process, two_processes, case):
    # global: the loss over the gathered batch; local: each process's rows against the gathered
    # batch (open_clip's --local-loss); accum: each process's rows in 2 micro-batches
    single = one_process["whole"]
    loss_diff, param_diff = _differences(single, two_processes[case])
    print(f"2x4 ({case}) vs 1x8: loss diff {loss_diff:.2e}, param diff {param_diff:.2e}")
    assert loss_diff <= TOLERANCE and param_diff <= TOLERANCE
    # with train.py's DDP settings, as the wrapper holds them (gradients in DDP's buckets, no buffer
    # broadcast); a launched group of one process is wrapped too
    for settings in (two_processes[case]["ddp"], single["ddp"]):
        assert settings == {"gradient_as_bucket_view": True, "broadcast_buffers": False}
    # and the run moved: equal weights after 0 steps would prove nothing
    assert single["losses"][0] != single["losses"][-1]


@pytest.mark.slow
def test_accumulation_in_one_process_equals_the_whole_batch(one_process):
    loss_diff, param_diff = _differences(one_process["whole"], one_process["accum"])
    print(f"1 process, accum 2 vs 1x8: loss diff {loss_diff:.2e}, param diff {param_diff:.2e}")
    assert loss_diff <= TOLERANCE and param_diff <= TOLERANCE
