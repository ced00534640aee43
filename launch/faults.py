"""The faults of a cluster job, made ordinary: preemption signals, a dead or hung peer, a killed worker,
a node whose CUDA does not work.

- Signals. SIGTERM and SIGUSR1 (SLURM's `--signal=USR1@120` warning, preemption, `scancel`, the
  launcher forwarding its own SIGTERM) only set a flag (`StopRequests`). Every STOP_CHECK_EVERY steps
  (and at every log and checkpoint step) each process adds its vote to the step's one host read, a
  gather the trainer makes anyway (`ContrastiveStep.read`): a signal to any one process stops all of
  them at the same step, over the run's own process group (NCCL on GPUs: no second, host-side group
  that would have to reach the other node, no extra collective). The trainer then writes a checkpoint
  there, writes `preempted.json` in the run folder and exits with PREEMPTED_EXIT_STATUS (75,
  EX_TEMPFAIL: "resume me"). A DataLoader worker ignores the signals: the trainer decides for it.
- A dead or hung peer. Every collective has a deadline, `--collective-timeout` (600 s: longer than any
  wait a healthy B/32 job makes, docs/training-at-scale.md), given to `init_process_group`
  (Accelerate's InitProcessGroupKwargs); NCCL enforces it with its watchdog thread
  (TORCH_NCCL_ASYNC_ERROR_HANDLING=3, set here unless the user set it), gloo in its own send/recv. A
  *dead* process ends the job sooner: its sockets close, its launcher fails its node and srun's
  `--kill-on-bad-exit` ends the rest. `failure_line` turns the backend's error into one line.
- A killed DataLoader worker (the OOM killer): `failure_line` names the worker and its signal.
- GPUs asked for but unusable (`unusable_gpu_line`): a run that SLURM or CUDA_VISIBLE_DEVICES gave GPUs
  must not fall back to training on CPU; it exits 2 naming the driver and torch's CUDA.

    python -m pytest -q tests/test_faults.py   # each fault, measured (docs/training-at-scale.md)
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import InitProcessGroupKwargs

from runfolder import RunFolder

PREEMPTED_EXIT_STATUS = 75  # sysexits.h EX_TEMPFAIL: the run saved where it stopped; run it again
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
SIGNAL_NAMES = {signal.strsignal(s): s.name for s in signal.Signals if signal.strsignal(s)}


class Preempted(Exception):
    """The processes agreed to stop at a step boundary and saved there; exit PREEMPTED_EXIT_STATUS."""


# How often the processes compare their stop flags, in steps. Sized against SLURM's 120 s warning: 10
# B/32 steps take ~0.3 s on H100s (~1.2 s on A100s), leaving the rest for the 1.8 GB checkpoint write;
# it is also the default --log-every, whose read the vote rides on, so by default it costs nothing.
STOP_CHECK_EVERY = 10
STOP_VOTE = "stop_requested"  # the vote's key among the counts summed by the step's read


class StopRequests:
    """A flag set by SIGTERM / SIGUSR1, and the collective decision to stop (see the module docstring)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Take over the stop signals (the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signals in the main thread only; a run driven from a thread keeps them
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self.owner:  # a forked DataLoader worker: SLURM signals every process
            return
        self.received = self.received or signal.Signals(signum).name

    @staticmethod
    def due(step: int) -> bool:
        """Whether the processes compare their flags after `step` (the same answer on every process)."""
        return step % STOP_CHECK_EVERY == 0

    def vote(self) -> dict[str, int]:
        """This process's vote, to be summed over the processes with the step's other counts."""
        return {STOP_VOTE: 1 if self.received else 0}

    @staticmethod
    def agreed(summed: dict[str, int]) -> bool:
        """True on every process when any process voted to stop; takes the vote out of `summed`."""
        return summed.pop(STOP_VOTE, 0) > 0


def start_loader_processes(method: str) -> None:
    """Make `method` (fork, forkserver or spawn) the start method of the DataLoader workers, process-wide
    (the eval loaders follow it too). The forkserver is started here with SIGTERM and SIGUSR1 ignored, a
    disposition it and every worker forked from it keep: SLURM signals every process of the job step, and
    a forkserver killed by one would orphan the workers, whose watchdog then ends them and the run."""
    if multiprocessing.get_start_method(allow_none=True) != method:
        multiprocessing.set_start_method(method, force=True)
    if method != "forkserver" or threading.current_thread() is not threading.main_thread():
        return
    multiprocessing.set_forkserver_preload(["launch.data"])  # workers fork with torch imported once
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        from multiprocessing import forkserver
        forkserver.ensure_running()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def collective_timeout(seconds: float) -> InitProcessGroupKwargs:
    """The Accelerator's process-group settings: every collective fails after `seconds`. For NCCL
    the watchdog enforces it by aborting the communicator (async error handling mode 3: tear down,
    skip clean-up), which ends the process instead of leaving it blocked in a kernel."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    return InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=seconds))


def write_preempted(run_dir: Path, step: int, received: str | None, checkpoint: str | None) -> None:
    RunFolder(run_dir).preempted.write_text(json.dumps({
        "step": step, "signal": received, "checkpoint": checkpoint,
        "exit_status": PREEMPTED_EXIT_STATUS}) + "\n")


def clear_preempted(run_dir: Path) -> None:
    RunFolder(run_dir).preempted.unlink(missing_ok=True)


KILLED_WORKER = re.compile(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.]+)")
EXITED_WORKERS = re.compile(r"DataLoader worker \(pid\(s\) ([\d, ]+)\) exited unexpectedly")
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator",
             "Timed out", "timed out", "Watchdog caught collective operation timeout")


def failure_line(error: BaseException, rank: int, worker_pids: list[int], collective_timeout_s: float,
                 resume_hint: str) -> str | None:
    """One line for a fault that ends the run (a killed DataLoader worker, a dead or hung peer), or
    None when `error` is not one of them."""
    text = str(error)
    killed, exited = KILLED_WORKER.search(text), EXITED_WORKERS.search(text)
    if killed or exited:
        pid = int(killed.group(1)) if killed else int(exited.group(1).split(",")[0])
        worker = worker_pids.index(pid) if pid in worker_pids else "?"
        how = (f"was killed by signal {SIGNAL_NAMES.get(killed.group(2).strip(), killed.group(2).strip())}"
               if killed else "exited unexpectedly")
        oom = " (SIGKILL: often the kernel's OOM killer; give it more memory or fewer --workers)" \
            if killed and "Killed" in killed.group(2) else ""
        return f"DataLoader worker {worker} (pid {pid}) of process {rank} {how}{oom}; {resume_hint}"
    is_backend = isinstance(error, dist.DistError) if hasattr(dist, "DistError") else False
    if is_backend or any(marker in text for marker in PEER_LOST):
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
        return (f"process {rank}: a collective failed, another process of the run died or hung (deadline "
                f"--collective-timeout {collective_timeout_s:g} s): {first[:200]}; {resume_hint}")
    return None


# The variables through which a launcher gives this process GPUs: device lists (a user's or Accelerate's
# CUDA_VISIBLE_DEVICES, SLURM's gres indices), where "", -1 and SLURM's NoDevFiles mean none, and SLURM's
# counts (--gpus*, "8" or "h100:8"), where 0 means none.
GPU_DEVICE_LISTS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
GPU_COUNTS = ("SLURM_GPUS_ON_NODE", "SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK")


# An NVIDIA GPU whose driver is loaded, whatever the launcher said (`accelerate launch` with gpu_ids: all
# exports nothing): a broken CUDA on such a node is the cu13x-wheel-on-an-older-driver case
NVIDIA_DEVICE = Path("/dev/nvidia0")


def gpu_request(environ=os.environ, device: Path = NVIDIA_DEVICE) -> str | None:
    """What gives this process GPUs: `NAME=value` of the first such variable, else the NVIDIA device
    file when it exists; None when nothing does."""
    for name in GPU_DEVICE_LISTS + GPU_COUNTS:
        value = environ.get(name, "").strip()
        none = ("", "-1", "NoDevFiles") if name in GPU_DEVICE_LISTS else ("", "0")
        if value not in none and not (name in GPU_COUNTS and value.rsplit(":", 1)[-1] == "0"):
            return f"{name}={value}"
    hidden = environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1", "NoDevFiles")
    return f"{device} (an NVIDIA GPU)" if not hidden and device.exists() else None


def nvidia_driver_version() -> str:
    """The NVIDIA driver's version from the kernel module, else nvidia-smi; "no driver found" without one."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", text)
        if found:
            return found.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:  # a broken driver can hang nvidia-smi; 10 s is its usual worst start on a healthy 8-GPU node
            done = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=10)
            version = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
            return version if done.returncode == 0 and version else \
                f"nvidia-smi failed: {(done.stderr or done.stdout).strip().splitlines()[0][:120]}" \
                if (done.stderr or done.stdout).strip() else "nvidia-smi failed"
        except (OSError, subprocess.TimeoutExpired):
            return "nvidia-smi did not answer in 10 s"
    return "no driver found"


def unusable_gpu_line(environ=os.environ, device: Path = NVIDIA_DEVICE) -> str | None:
    """One line when this process was given GPUs but torch cannot use CUDA, else None. Call it only
    where torch found no accelerator."""
    request = gpu_request(environ, device)
    if request is None or environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return None  # no GPU asked for, or `accelerate launch --cpu`: a deliberate CPU run
    reason = ""
    try:  # torch's own reason (a driver too old for this wheel, no device...), its first line
        torch.cuda.init()
    except Exception as error:  # noqa: BLE001 - any failure to start CUDA is the reason to show
        reason = f" ({str(error).strip().splitlines()[0][:200]})" if str(error).strip() else ""
    cuda = torch.version.cuda or "none (a CPU-only wheel)"
    return (f"{request} asks for GPUs, but torch {torch.__version__} cannot use CUDA{reason}: torch built "
            f"for CUDA {cuda}, NVIDIA driver: {nvidia_driver_version()}; "
            "install a torch wheel that this driver supports (or fix the node), or pass --allow-cpu "
            "for a deliberate CPU run")
