"""Where one training process runs before its Accelerator exists: its device (GPU, another torch
accelerator, or CPU) and, on CPU, how many torch threads it takes. Used by launch/train.py.
"""

from __future__ import annotations

import os

import torch

from launch.run_resume import RunError

CPU_THREADS_ENV = "MIXCLIP_CPU_THREADS"  # set by whatever shares a node's cores among several jobs


def cpu_threads(requested: int | None, processes_on_node: int) -> int:
    """Torch threads for one CPU training process: `requested`, else $MIXCLIP_CPU_THREADS, else the
    cores this process may run on shared by the processes on this node (as `accelerate launch --cpu`
    chooses). Not OMP_NUM_THREADS: plain `accelerate launch` sets it to 1 on a machine without GPUs."""
    if requested:
        return requested
    shared = os.environ.get(CPU_THREADS_ENV, "")
    if shared:
        if not shared.isdigit() or int(shared) < 1:
            raise RunError(f"{CPU_THREADS_ENV}={shared!r}: expected a whole number of threads >= 1")
        return int(shared)
    import psutil  # an Accelerate dependency

    cores = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    return max(1, cores // max(1, processes_on_node))


def no_accelerator() -> bool:
    """True on a machine without GPUs (or other torch accelerators): processes then run on CPU and,
    when a launcher started several, join over gloo (accelerate only does so when told `cpu=True`)."""
    has_accelerator = getattr(torch, "accelerator", None)
    return not (has_accelerator.is_available() if has_accelerator else torch.cuda.is_available())


def training_device(on_cpu: bool) -> torch.device:
    """The device this process will train on (before the Accelerator exists: its precision depends on it)."""
    if on_cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(torch.accelerator.current_accelerator().type)
