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
# srun stand-in: checks the flags a real srun needs from the script (and refuses any other), then runs
# its command once per node of SLURM_NNODES, all on this machine; SRUN_ENV_LOG: where to write its env
fail() { echo "srun stand-in: $*" >&2; exit 2; }
declare -A flags=()
while [[ $# -gt 0 && $1 == --* ]]; do
  [[ $1 == *=* ]] || fail "flag $1 without =value"
  flags[${1%%=*}]=${1#*=}
  shift
done
for name in "${!flags[@]}"; do
  [[ $name =~ ^--(kill-on-bad-exit|ntasks-per-node|cpus-per-task)$ ]] || fail "unexpected flag $name"
done
[[ ${flags[--kill-on-bad-exit]-} == 1 ]] || fail "--kill-on-bad-exit=1 missing: a dead node leaves the rest"
[[ ${flags[--ntasks-per-node]-} == 1 ]] || fail "--ntasks-per-node=1 missing: one launcher a node"
cpus=${flags[--cpus-per-task]-}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || fail "--cpus-per-task=N missing: Slurm >= 22.05 does not pass sbatch's down"
[[ -z ${SLURM_CPUS_PER_TASK:-} || $cpus == "$SLURM_CPUS_PER_TASK" ]] ||
  fail "--cpus-per-task=$cpus in a job of $SLURM_CPUS_PER_TASK"
if [[ -n ${SRUN_ENV_LOG:-} ]]; then env > "$SRUN_ENV_LOG"; fi
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


def dry_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a submission whose srun stand-in prints the command it was given (SRUN_DRY)."""
    return {"PATH": f"{stand_ins(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
            "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "SRUN_DRY": "1", "SLURM_JOB_ID": "123456",
            "SLURM_CPUS_PER_TASK": "96", "IMAGENET_VAL": "/data/imagenet/val",
            "RUNS_DIR": str(tmp_path / "runs"), **extra}


def submit(env: dict, *args: str, script: Path = SBATCH, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def test_default_job_trains_the_committed_laion_recipe_and_scores_imagenet(tmp_path):
    log = tmp_path / "srun.env"
    done = submit(dry_env(tmp_path, SRUN_ENV_LOG=str(log)))
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.splitlines()[-1].split())
    assert "launch/train.py --config launch/configs/laion400m-b32.yaml --tower mixer " in command, command
    assert "--train-data" not in command  # the config's own LAION pattern
    # the port is the job's own (10000 + 123456 % 20000), workers the cores a GPU gets less one (96 / 8 - 1)
    assert "--num_processes 16 --machine_rank $SLURM_NODEID --main_process_ip 127.0.0.1 " \
           "--main_process_port 13456 " in command
    assert "--workers 11 --imagenet-val '/data/imagenet/val' " in command
    assert command.endswith(f"--runs-dir {tmp_path / 'runs'} --name laion400m-mixer-b32 --resume auto")
    env = dict(line.split("=", 1) for line in log.read_text().splitlines() if "=" in line)
    assert env["MASTER_PORT"] == "13456" and env["NCCL_DEBUG"] == "WARN"
    assert env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "1" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    assert env["TORCH_NCCL_DEBUG_INFO_TEMP_FILE"] == f"{tmp_path}/runs/laion400m-mixer-b32/nccl_trace_rank_"
    assert int(env["TORCH_NCCL_TRACE_BUFFER_SIZE"]) > 0  # the flight recorder the dump writes out


def test_the_job_refuses_to_start_without_imagenet_unless_told_no_eval(tmp_path):
    env = dry_env(tmp_path)
    del env["IMAGENET_VAL"]
    done = submit(env)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.startswith("error: IMAGENET_VAL is not set") and len(done.stderr.splitlines()) == 1
    for told in (submit({**env, "NO_EVAL": "1"}), submit(env, "--no-eval")):
        assert told.returncode == 0, told.stderr
        assert "--imagenet-val" not in told.stdout and "--workers 11 " in told.stdout


def test_the_sbatch_header_asks_for_what_a_requeued_100k_step_job_needs():
    header = [line.split()[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH ")]
    for flag in ("--open-mode=append", "--mem=0", "--requeue", "--signal=USR1@120", "--cpus-per-task=96",
                 "--ntasks-per-node=1", "--gpus-per-node=8", "--nodes=2"):
        assert flag in header, flag


def test_the_srun_stand_in_refuses_a_job_step_without_its_cores_or_kill_on_bad_exit(tmp_path):
    env = dry_env(tmp_path)
    for missing in ('--cpus-per-task="$CPUS_PER_TASK" ', "--kill-on-bad-exit=1 "):
        script = tmp_path / f"without{len(missing)}.sbatch"
        text = SBATCH.read_text()
        assert missing in text
        script.write_text(text.replace(missing, ""))
        done = submit(env, script=script)
        assert done.returncode == 2 and done.stderr.startswith("srun stand-in: "), done.stderr
        assert missing.split("=")[0] in done.stderr
    wrong = submit({**env, "SLURM_CPUS_PER_TASK": "32", "WORKERS": "3"})  # the flag follows the job's cores
    assert wrong.returncode == 0 and "--workers 3 " in wrong.stdout, wrong.stderr


def test_the_job_runs_in_the_submit_directory_with_its_environment_activated(tmp_path):
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f"touch {tmp_path}/activated\n")
    env = dry_env(tmp_path, SLURM_SUBMIT_DIR=str(REPO), VENV=str(tmp_path / "venv"))
    done = submit(env, cwd=tmp_path)  # sbatch starts the script elsewhere; it moves to the submit dir
    assert done.returncode == 0 and (tmp_path / "activated").exists(), done.stderr
    hook = submit({**env, "ACTIVATE": f"touch {tmp_path}/hooked"}, cwd=tmp_path)
    assert hook.returncode == 0 and (tmp_path / "hooked").exists(), hook.stderr
    missing = submit({**env, "VENV": str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: VENV={tmp_path / 'nowhere'}: ")
    elsewhere = submit({**env, "SLURM_SUBMIT_DIR": str(tmp_path)})
    assert elsewhere.returncode == 2 and "not the mixclip-bench repository root" in elsewhere.stderr


def test_data_override_reaches_train_py_as_one_quoted_brace_pattern(tmp_path):
    done = submit(dry_env(tmp_path, DATA="/x/{00..09}.tar"))
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.split())
    assert f"--train-data '/x/{{00..09}}.tar' --runs-dir {tmp_path / 'runs'} --name" in command


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
           "NO_EVAL": "1",
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
