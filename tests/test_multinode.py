"""Two `accelerate launch` "nodes" on this machine (127.0.0.1, gloo) form one run of world size 2, each
node reading its own sample stream; resuming that run with one process is refused naming both sizes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launch import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--tower", "mixer", "--batch-size", "8", "--eval-samples", "16", "--workers", "1", "--log-every", "1",
        "--warmup-steps", "1", "--cpu-threads", "1"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env() -> dict[str, str]:
    """This environment, with this tree's packages and the venv's `accelerate` found first."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
def test_two_machines_on_one_host_form_one_run_of_world_size_2(tmp_path, capsys):
    port = free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "launch" / "accelerate" / "multinode.yaml"), "--num_machines", "2",
         "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
         "--main_process_port", str(port),
         "launch/train.py", *TINY, "--steps", "3", "--save-every", "3", "--runs-dir", str(tmp_path),
         "--name", "two-nodes"],
        cwd=REPO, env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-1500:] + outputs[1][-1500:]
    run = tmp_path / "two-nodes"
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 16
    assert config["device_settings"]["ddp"] == {"gradient_as_bucket_view": True, "broadcast_buffers": False}
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [line for line in steps if "loss" in line]
    print(f"2 nodes: world size {config['world_size']}, steps {[line['step'] for line in trained]}")
    assert [line["step"] for line in trained] == [1, 2, 3] and trained[-1]["samples_seen"] == 48
    # each node read its own stream: the two ranks' streams hold different samples
    data = torch.load(run / "checkpoints" / "step_00000003.pt", weights_only=True)["data"]
    assert len(data) == 2 and all(state["batches"] == 3 for state in data)
    buffers = [state["roles"][0]["buffer"] for state in data]
    assert not torch.equal(buffers[0], buffers[1])

    # One process with the same global batch (16): the recipe agrees, the sample streams cannot.
    # (in this process: a refusal needs no process of its own)
    code = train.main([*TINY, "--batch-size", "16", "--steps", "3", "--runs-dir", str(tmp_path), "--name",
                       "two-nodes", "--resume", "latest"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert "trained by 2 processes, this run has 1" in errors[0]
