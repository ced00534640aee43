"""The processes of a distributed evaluation: which share is this process's, and the one gather.

Evaluation runs in every process of a training job (or of ``accelerate launch``/``torchrun``); each
scores its share and a single ``gather_objects`` collects the shares. A process never waits in a
collective for another one's solo job: every process reaches each gather after its own, equal part.

    rank, world_size = current_process()         # (0, 1) outside torch.distributed
    rank, world_size, device = join_launched_processes()   # a CLI under torchrun / accelerate launch
    shares = gather_objects(my_share, world_size) # [rank 0's, rank 1's, ...] in every process

Not run directly.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def current_process() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """Every process's ``obj`` in rank order, in every process (picklable objects; CPU tensors)."""
    if world_size == 1:
        return [obj]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != world_size:
        raise RuntimeError(f"evaluation split over {world_size} processes needs a torch.distributed "
                           "process group of that size")
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def join_launched_processes() -> tuple[int, int, str | None]:
    """(rank, world size, this process's device or None) for a command started by ``torchrun`` or
    ``accelerate launch`` (WORLD_SIZE > 1 in the environment): joins their process group (NCCL on
    GPUs, gloo otherwise) once. A plain ``python -m ...`` is (0, 1, None)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if not dist.is_initialized():
        if device != "cpu":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device != "cpu" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device
