"""The faults of a cluster job that need no data stall or disk (tests/test_faults.py has those): the
deadlines' sizes, GPUs asked for but unusable, the stop vote and the process group's teardown, loader
workers started by forkserver under a stop signal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_faults import _logged_steps, _wait_for
from test_faults_full_disk import _args
from test_multinode import TINY, node_env
from test_train_loader import write_dataset

import towers
from launch import train
from launch.config import RunOptions
from launch.faults import (
    PREEMPTED_EXIT_STATUS,
    STOP_CHECK_EVERY,
    StopRequests,
    gpu_request,
    unusable_gpu_line,
)

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- deadlines


def test_the_collective_deadline_outlasts_a_b32_checkpoint_on_a_slow_shared_filesystem():
    # The longest wait of a healthy job: rank 0 writes weights + AdamW's two moments (fp32) while 15
    # ranks wait. At 10 MB/s (an NFS home under load) the Transformer B/32's state takes ~180 s; the
    # deadline keeps 3x that, and a stalled shard (abandoned after --shard-read-timeout) stays far below.
    with torch.device("meta"):
        params = sum(p.numel() for p in towers.build_model("transformer", "transformer", "B/32").parameters())
    state_bytes = params * 4 * 3
    write_s = state_bytes / 10e6
    options = RunOptions()
    print(f"B/32 state {state_bytes / 1e9:.2f} GB: {write_s:.0f} s at 10 MB/s; deadline "
          f"{options.collective_timeout:g} s, shard read timeout {options.shard_read_timeout:g} s")
    assert 1.7e9 < state_bytes < 1.9e9
    assert options.collective_timeout >= 3 * write_s
    assert options.shard_read_timeout * 5 <= options.collective_timeout


# ---------------------------------------------------------------- GPUs asked for but unusable


def test_which_variables_ask_for_gpus(tmp_path):
    assert gpu_request({"CUDA_VISIBLE_DEVICES": "0"}) == "CUDA_VISIBLE_DEVICES=0"  # device 0, not none
    assert gpu_request({"SLURM_GPUS_ON_NODE": "8"}) == "SLURM_GPUS_ON_NODE=8"
    assert gpu_request({"SLURM_GPUS": "h100:16"}) == "SLURM_GPUS=h100:16"
    assert gpu_request({"SLURM_JOB_GPUS": "0,1"}) == "SLURM_JOB_GPUS=0,1"
    for hidden in ({}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"},
                   {"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, {"SLURM_GPUS_ON_NODE": "0"},
                   {"SLURM_GPUS": "h100:0"}):
        assert gpu_request(hidden) is None, hidden
    # `accelerate launch --cpu` is a deliberate CPU run
    assert unusable_gpu_line({"CUDA_VISIBLE_DEVICES": "0", "ACCELERATE_USE_CPU": "True"}) is None
    # a node with an NVIDIA device file asks for GPUs whatever the launcher exported, unless they are hidden
    device = tmp_path / "nvidia0"
    assert gpu_request({}, device) is None
    device.touch()
    assert gpu_request({}, device) == f"{device} (an NVIDIA GPU)"
    assert gpu_request({"CUDA_VISIBLE_DEVICES": ""}, device) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch cannot use CUDA")
def test_a_run_given_a_gpu_without_usable_cuda_exits_2_naming_the_driver_and_torch_cuda(tmp_path, monkeypatch,
                                                                                         capsys):
    env = {**node_env(), "CUDA_VISIBLE_DEVICES": "0"}
    done = subprocess.run([sys.executable, "launch/train.py", *_args(tmp_path, "gpu")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    errors = done.stderr.strip().splitlines()
    print(f"CUDA_VISIBLE_DEVICES=0 without usable CUDA: exit {done.returncode}: {errors}")
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith("error: CUDA_VISIBLE_DEVICES=0 asks for GPUs, but torch ")
    cuda = torch.version.cuda or "none (a CPU-only wheel)"
    assert f"torch built for CUDA {cuda}, NVIDIA driver: " in errors[0]
    if not Path("/proc/driver/nvidia/version").exists() and not shutil.which("nvidia-smi"):
        assert "NVIDIA driver: no driver found;" in errors[0]
    assert "--allow-cpu" in errors[0] and not (tmp_path / "gpu").exists()

    # SLURM's variable, in this process; --allow-cpu passes the guard (and meets the next check)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    assert train.main(_args(tmp_path, "slurm")) == 2
    assert capsys.readouterr().err.startswith("error: SLURM_GPUS_ON_NODE=8 asks for GPUs")
    assert train.main(_args(tmp_path, "slurm", "--allow-cpu", "--imagenet-val", str(tmp_path / "none"))) == 2
    assert "--imagenet-val" in capsys.readouterr().err


# ---------------------------------------------------------------- the stop vote and the process group


def test_stop_votes_ride_on_the_step_read_and_every_exit_destroys_the_group(tmp_path, monkeypatch, capsys):
    # SIGUSR1 after step 3 with --log-every 100: the processes compare flags at the next multiple of
    # STOP_CHECK_EVERY (10), inside the step's one read, with no collective of its own; the run
    # checkpoints there and exits 75. Every exit releases the process group.
    import accelerate.state

    from launch.trainer import ContrastiveStep

    original_call, original_read, reads, destroyed = ContrastiveStep.__call__, ContrastiveStep.read, [], []

    def call(self, micro_batches, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original_call(self, micro_batches, step)

    def read(self, counts=None):
        reads.append(dict(counts))
        return original_read(self, counts)

    monkeypatch.setattr(ContrastiveStep, "__call__", call)
    monkeypatch.setattr(ContrastiveStep, "read", read)
    monkeypatch.setattr(accelerate.state.AcceleratorState, "destroy_process_group",
                        lambda self, group=None: destroyed.append(group))
    code = train.main(_args(tmp_path, "vote", "--steps", "30", "--log-every", "100", "--save-every", "0"))
    out, err = capsys.readouterr()
    marker = json.loads((tmp_path / "vote" / "preempted.json").read_text())
    print(f"SIGUSR1 after step 3, --log-every 100: stopped at step {marker['step']}, {len(reads)} read(s), "
          f"exit {code}; progress lines: {[line for line in out.splitlines() if line.startswith('step ')]}")
    assert code == PREEMPTED_EXIT_STATUS and marker["step"] == STOP_CHECK_EVERY == 10
    assert [r["stop_requested"] for r in reads] == [1] and marker["signal"] == "SIGUSR1"
    assert (tmp_path / "vote" / "checkpoints" / "latest").read_text().strip() == "step_00000010.pt"
    assert destroyed == [None]
    # not a terminal: a plain progress line instead of tqdm's carriage returns
    assert "step 10/30: loss " in out and "vote:" not in err and "step/s" not in err

    stop = StopRequests()
    assert StopRequests.due(20) and not StopRequests.due(21) and stop.vote() == {"stop_requested": 0}
    summed = {"corrupt_image": 2, "stop_requested": 0}
    assert not StopRequests.agreed(summed) and summed == {"corrupt_image": 2}  # the vote is not a skip count
    assert train.main(_args(tmp_path, "bad", "--imagenet-val", str(tmp_path / "none"))) == 2
    assert destroyed == [None, None]  # a refusal after the Accelerator exists destroys it too


@pytest.mark.slow
def test_forkserver_loader_workers_survive_a_stop_signal_to_every_process_of_the_step(tmp_path):
    # SLURM signals every process of the job step: with --loader-start-method forkserver that includes
    # the fork server, which must ignore the signal (a dead server orphans the workers, and their
    # watchdog ends them and the run), and the workers it forked; the trainer stops at a checkpoint.
    run_dir = tmp_path / "server"
    data, _ = write_dataset(tmp_path / "shards")  # not the toy set: its first use would build it here
    process = subprocess.Popen(
        [sys.executable, "launch/train.py", *TINY, "--train-data", data, "--steps", "40", "--save-every", "0",
         "--loader-start-method", "forkserver", "--runs-dir", str(tmp_path), "--name", "server"],
        cwd=REPO, env=node_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: max(_logged_steps(run_dir), default=0) >= 2, process, "step 2", limit=600)
    trainer = psutil.Process(process.pid)
    family = trainer.children(recursive=True)
    # the server is the trainer's child; its workers are forked from it (and share its command line)
    servers = [p for p in trainer.children() if "forkserver" in " ".join(p.cmdline())]
    workers = [p for p in family if p.ppid() in {s.pid for s in servers}]
    for member in family:  # the trainer's children first: none may die of it
        member.send_signal(signal.SIGUSR1)
    time.sleep(1)
    survivors = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    trainer.send_signal(signal.SIGUSR1)
    err = process.communicate(timeout=300)[1]
    marker = json.loads((run_dir / "preempted.json").read_text())
    print(f"forkserver: {len(servers)} server(s), {len(workers)} worker(s) of theirs; SIGUSR1 to all "
          f"{len(family) + 1} processes: exit {process.returncode}, stopped at step {marker['step']}")
    assert len(servers) == 1 and len(workers) == 1, [p.cmdline() for p in family]
    assert survivors == family, "a signal to every process of the step killed the fork server or a worker"
    assert process.returncode == PREEMPTED_EXIT_STATUS, err[-3000:]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{marker['step']:08d}.pt"
