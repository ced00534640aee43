"""The faults of a cluster job, made ordinary: preemption signals, a dead or hung peer, a killed worker.

- Signals. SIGTERM and SIGUSR1 (SLURM's `--signal=USR1@120` warning, preemption, `scancel`, the
  launcher forwarding its own SIGTERM) only set a flag (`StopRequests`). At every step boundary the
  processes all-reduce the flag with MAX (`agreed()`), so a signal to any one process stops all of
  them at the same step; the trainer then writes a checkpoint there, writes `preempted.json` in the
  run folder and exits with PREEMPTED_EXIT_STATUS (75, EX_TEMPFAIL: "resume me"). The flag travels
  over a gloo group on the host, never through the GPU stream, so the check costs no host-device
  sync. A forked DataLoader worker ignores the signals: the trainer decides for it.
- A dead or hung peer. Every collective has a deadline, `--collective-timeout` (60 s), given to
  `init_process_group` (Accelerate's InitProcessGroupKwargs); NCCL enforces it with its watchdog
  thread (TORCH_NCCL_ASYNC_ERROR_HANDLING=3, set here unless the user set it), gloo in its own
  send/recv. `failure_line` turns the backend's error into one line naming what happened.
- A killed DataLoader worker (the OOM killer): `failure_line` names the worker and its signal.

    python -m pytest -q tests/test_faults.py   # each fault, measured (docs/training-at-scale.md)
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import InitProcessGroupKwargs

PREEMPTED_EXIT_STATUS = 75  # sysexits.h EX_TEMPFAIL: the run saved where it stopped; run it again
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PREEMPTED_MARKER = "preempted.json"  # in the run folder; launch/slurm/train.sbatch requeues on it
SIGNAL_NAMES = {signal.strsignal(s): s.name for s in signal.Signals if signal.strsignal(s)}


class Preempted(Exception):
    """The processes agreed to stop at a step boundary and saved there; exit PREEMPTED_EXIT_STATUS."""


class StopRequests:
    """A flag set by SIGTERM / SIGUSR1, and the collective decision to stop (see the module docstring)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.received: str | None = None
        self.group = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        """Take over the stop signals (the main thread only) and choose the flag's process group: the
        default group on gloo, a gloo group beside NCCL (a CPU all-reduce, no device sync)."""
        if dist.is_available() and dist.is_initialized() and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")
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

    def agreed(self) -> bool:
        """True on every process when any process received a stop signal (a collective: every
        process calls it at the same step boundaries)."""
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int32)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())


def collective_timeout(seconds: float) -> InitProcessGroupKwargs:
    """The Accelerator's process-group settings: every collective fails after `seconds`. For NCCL
    the watchdog enforces it by aborting the communicator (async error handling mode 3: tear down,
    skip clean-up), which ends the process instead of leaving it blocked in a kernel."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    return InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=seconds))


def write_preempted(run_dir: Path, step: int, received: str | None, checkpoint: str | None) -> None:
    (run_dir / PREEMPTED_MARKER).write_text(json.dumps({
        "step": step, "signal": received, "checkpoint": checkpoint,
        "exit_status": PREEMPTED_EXIT_STATUS}) + "\n")


def clear_preempted(run_dir: Path) -> None:
    (run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)


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
