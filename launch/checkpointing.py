"""Atomic training checkpoints with a `latest` pointer, and the RNG state of every process.

A checkpoint is one `torch.save`d dict: `model_config` + `state_dict` (so `towers.load` reads it as a
model), plus `experiment`, `recipe_sha256`, `step`, `samples_seen`, `optimizer`, `scaler`, and
`rng` (one entry per process). It is written to a temporary file in the same folder, fsync'd, and
renamed over its final name; then `latest` (a text file holding that name) is replaced the same way.
A run killed at any instant therefore leaves either the previous checkpoint or the new one, never a
torn file. Everything in it loads with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from towers.checkpoints import LATEST_POINTER as LATEST
from towers.checkpoints import latest_checkpoint


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(folder: Path, step: int, payload: dict) -> Path:
    """Write `payload` as step `step` atomically and point `latest` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_name(step)
    _atomic_write(path, lambda f: torch.save(payload, f))
    _atomic_write(folder / LATEST, lambda f: f.write(path.name.encode() + b"\n"))
    return path


def resolve_checkpoint(spec: str, folder: Path) -> Path:
    """`latest` -> the file the run's pointer names; anything else is a path."""
    if spec == LATEST:
        path = latest_checkpoint(folder)
        if path is None:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {folder} (no '{LATEST}' pointer)")
    else:
        path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {spec}: checkpoint {path} does not exist")
    return path


def capture_rng_state() -> dict:
    """This process's RNG states, as tensors and plain numbers (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
