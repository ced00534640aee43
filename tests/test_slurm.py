"""launch/slurm/train.sbatch itself, run with `srun` / `scontrol` stand-ins that start its two "nodes"
as two local processes on 127.0.0.1 (gloo, tiny variant): it trains with world size 2, and after a
kill -9 of the whole job a second submission of the same script resumes it (`--resume auto`); SLURM's
warning signal (USR1 to every process of the job step) stops the run at a checkpoint and the script
requeues itself (`scontrol requeue`, recorded by the stand-in). One scenario runs all three
submissions: warned and requeued, the requeued job killed -9, a resubmission that finishes."""

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

from runfolder import CHECKPOINTS, STEP_FILE, checkpoint_name, latest_checkpoint

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
# scontrol stand-in: `scontrol show hostnames LIST`, and `scontrol requeue ID` (appended to $SCONTROL_LOG)
if [[ $1 == requeue ]]; then echo "requeue $2" >> "$SCONTROL_LOG"; exit 0; fi
[[ $1 == show && $2 == hostnames ]] || { echo "scontrol stand-in: only show hostnames, requeue" >&2; exit 2; }
tr ',' '\\n' <<< "$3"
"""


def stand_ins(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_default_job_trains_the_committed_laion_recipe(tmp_path):
    # With SRUN_DRY the srun stand-in prints the command it was given instead of running it.
    env = {"PATH": f"{stand_ins(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "SRUN_DRY": "1"}
    done = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.split())
    assert "launch/train.py --config launch/configs/laion400m-b32.yaml --tower mixer " in command, command
    assert "--train-data" not in command  # the config's own LAION pattern
    assert "--num_processes 16 --machine_rank $SLURM_NODEID --main_process_ip 127.0.0.1" in command
    assert command.endswith("--name laion400m-mixer-b32 --resume auto")


def test_data_override_reaches_train_py_as_one_quoted_brace_pattern(tmp_path):
    env = {"PATH": f"{stand_ins(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "SRUN_DRY": "1", "DATA": "/x/{00..09}.tar"}
    done = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--train-data '/x/{00..09}.tar' --runs-dir runs --name" in " ".join(done.stdout.split())


def _job_step_processes(job: subprocess.Popen) -> list[psutil.Process]:
    """Every process below the srun stand-in: the tasks' shells, the launchers, their workers and the
    DataLoader workers (what SLURM's --signal reaches; not the batch shell, not srun)."""
    srun = next(p for p in psutil.Process(job.pid).children() if "srun" in " ".join(p.cmdline()))
    return srun.children(recursive=True)


def _step_of(checkpoint: str | Path) -> int:
    return int(STEP_FILE.fullmatch(Path(checkpoint).name).group(1))


def _checkpoint_step(run: Path) -> int:
    """The step of the checkpoint `latest` names (written atomically), 0 before the first one."""
    named = latest_checkpoint(run / CHECKPOINTS)
    return _step_of(named) if named else 0


@pytest.mark.slow
def test_a_warned_job_requeues_the_requeued_job_survives_kill_9_and_a_resubmission_finishes(tmp_path):
    # One job's life on a preemptible partition, three submissions of the same script (one scenario,
    # so the suite starts 3 two-node jobs instead of 4): SLURM's warning signal stops the job at a
    # checkpoint and the script requeues itself; the requeued job resumes there and is killed -9 whole
    # (a node failure); a resubmission resumes from its newest checkpoint and finishes.
    bin_dir = stand_ins(tmp_path / "bin")
    data, _ = write_dataset(tmp_path / "shards")
    runs, log = tmp_path / "runs", tmp_path / "scontrol.log"
    base = node_env()
    env = {**base, "PATH": f"{bin_dir}{os.pathsep}{base['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "GPUS_PER_NODE": "1", "OMP_NUM_THREADS": "1",
           "MASTER_PORT": str(free_port()), "TOWER": "mixer", "RUN_NAME": "slurm", "DATA": data,
           "CONFIG": "launch/configs/toy.yaml", "RUNS_DIR": str(runs), "SCONTROL_LOG": str(log),
           "TRAIN_FLAGS": "--variant tiny --batch-size 8 --steps 16 --warmup-steps 1 --save-every 2 "
                          "--workers 1 --log-every 1 --eval-samples 16 --cpu-threads 1"}
    run = runs / "slurm"

    # 1. --signal=USR1@120 signals every process of the job step
    job = subprocess.Popen(["bash", str(SBATCH)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert job.poll() is None and time.time() < deadline, "job ended before step 2"
        time.sleep(0.02)
    start = time.perf_counter()
    for process in _job_step_processes(job):
        process.send_signal(signal.SIGUSR1)
    output = job.communicate(timeout=300)[0]
    seconds = time.perf_counter() - start
    marker = json.loads((run / "preempted.json").read_text())
    print(f"SLURM stand-in: USR1 to the job step; stopped at step {marker['step']}, job ended after "
          f"{seconds:.1f} s with {job.returncode}; scontrol saw {log.read_text().split()}")
    assert job.returncode == 0 and log.read_text() == "requeue 4242\n", output[-3000:]
    assert _checkpoint_step(run) == marker["step"] < 12 and not (run / "final_eval.json").exists()
    first = json.loads((run / "config.json").read_text())
    assert first["world_size"] == 2 and first["resumed_from"] is None

    # 2. the requeued job (the same script again) resumes at the marker's step; kill -9 of the whole
    # job after its next checkpoint, as SLURM's cgroup kill would (torchrun starts its workers in
    # sessions of their own, so a process-group kill would leave them training)
    env["MASTER_PORT"] = str(free_port())
    job = subprocess.Popen(["bash", str(SBATCH)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _checkpoint_step(run) <= marker["step"]:
        assert job.poll() is None and time.time() < deadline, "requeued job ended before a checkpoint"
        time.sleep(0.01)
    job_processes = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    for process in job_processes:
        process.send_signal(signal.SIGKILL)
    job.wait()
    psutil.wait_procs(job_processes, timeout=30)
    killed_at = _checkpoint_step(run)
    requeued = json.loads((run / "config.json").read_text())
    assert Path(requeued["resumed_from"]).name == checkpoint_name(marker["step"])
    assert not (run / "preempted.json").exists(), "a resumed run clears the marker"
    assert not (run / "checkpoints" / "step_00000016.pt").exists(), "killed too late to test resume"
    assert not (run / "final_eval.json").exists()

    # 3. a resubmission resumes from the newest checkpoint and finishes
    env["MASTER_PORT"] = str(free_port())
    again = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    config = json.loads((run / "config.json").read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = sorted({line["step"] for line in lines if "loss" in line})
    resumed_step = _step_of(config["resumed_from"])
    print(f"SLURM stand-in: requeued job killed -9 after step-{killed_at} checkpoint; resubmission resumed "
          f"from step {resumed_step} with world size {config['world_size']}, steps logged {steps}")
    assert config["world_size"] == 2 and marker["step"] < resumed_step == killed_at < 16
    assert config["run_options"]["resume"] == "auto" and steps == list(range(1, 17))
    assert log.read_text() == "requeue 4242\n"  # a finished job does not requeue
    assert json.loads((run / "final_eval.json").read_text())["step"] == 16
