"""launch/slurm/train.sbatch itself, run with `srun` / `scontrol` stand-ins that start its two "nodes"
as two local processes on 127.0.0.1 (gloo, tiny variant): it trains with world size 2, and after a
kill -9 of the whole job a second submission of the same script resumes it (`--resume auto`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from test_multinode import free_port, node_env
from test_train_loader import write_dataset

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "launch" / "slurm" / "train.sbatch"

SRUN = """#!/bin/bash
# srun stand-in: its command once per node of SLURM_NNODES, all on this machine
while [[ $# -gt 0 && $1 == --* ]]; do shift; done
if [[ -n ${SRUN_DRY:-} ]]; then echo "$@"; exit 0; fi
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""
SCONTROL = """#!/bin/bash
# scontrol stand-in: `scontrol show hostnames LIST` only
[[ $1 == show && $2 == hostnames ]] || { echo "scontrol stand-in: only 'show hostnames'" >&2; exit 2; }
tr ',' '\\n' <<< "$3"
"""


def stand_ins(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_default_data_is_the_whole_laion_brace_pattern(tmp_path):
    # ${DATA:-/x/{0..9}.tar} would end the default at the first '}'. With SRUN_DRY the srun stand-in
    # prints the command it was given instead of running it.
    env = {"PATH": f"{stand_ins(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "SRUN_DRY": "1"}
    done = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.split())
    assert "--train-data '/data/laion400m/{00000..41407}.tar' " in command, command
    assert "--num_processes 16 --machine_rank $SLURM_NODEID --main_process_ip 127.0.0.1" in command
    assert "--variant B/32" in command and command.endswith("--resume auto")


@pytest.mark.slow
def test_sbatch_script_trains_on_two_nodes_and_a_resubmission_resumes_after_kill_9(tmp_path):
    bin_dir = stand_ins(tmp_path / "bin")
    data, _ = write_dataset(tmp_path / "shards")
    runs = tmp_path / "runs"
    base = node_env()
    env = {**base, "PATH": f"{bin_dir}{os.pathsep}{base['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "GPUS_PER_NODE": "1", "OMP_NUM_THREADS": "1",
           "MASTER_PORT": str(free_port()), "TOWER": "mixer", "RUN_NAME": "slurm", "DATA": data,
           "TRAIN_FLAGS": f"--variant tiny --batch-size 8 --steps 8 --warmup-steps 1 --save-every 2 "
                          f"--workers 1 --log-every 1 --eval-samples 16 --cpu-threads 1 --runs-dir {runs}"}
    run = runs / "slurm"
    latest = run / "checkpoints" / "latest"
    job = subprocess.Popen(["bash", str(SBATCH)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (latest.exists() and latest.read_text().strip() == "step_00000002.pt"):
        assert job.poll() is None and time.time() < deadline, "job ended before its step-2 checkpoint"
        time.sleep(0.01)
    # The whole job, as SLURM's cgroup kill would: torchrun starts its workers in sessions of their
    # own, so a process-group kill would leave them training.
    job_processes = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    for process in job_processes:
        process.send_signal(signal.SIGKILL)
    job.wait()
    psutil.wait_procs(job_processes, timeout=30)
    assert not (run / "checkpoints" / "step_00000008.pt").exists(), "killed too late to test resume"
    first = json.loads((run / "config.json").read_text())
    assert first["world_size"] == 2 and first["resumed_from"] is None
    assert not (run / "final_eval.json").exists()

    env["MASTER_PORT"] = str(free_port())
    again = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    config = json.loads((run / "config.json").read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = sorted({line["step"] for line in lines if "loss" in line})
    print(f"SLURM stand-in: world size {config['world_size']}, resumed from "
          f"{Path(config['resumed_from']).name}, steps logged {steps}")
    resumed_step = int(Path(config["resumed_from"]).stem.split("_")[1])
    assert config["world_size"] == 2 and 2 <= resumed_step < 8
    assert config["run_options"]["resume"] == "auto" and steps[-1] == 8
    assert json.loads((run / "final_eval.json").read_text())["step"] == 8
