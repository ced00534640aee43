"""Atomic training checkpoints with a `latest` pointer, and the RNG state of every process (the
folder's layout, the pointer and the atomic writer are `runfolder`'s).

A checkpoint is one `torch.save`d dict: `model_config` + `state_dict` (so `towers.load` reads it as a
model), plus `experiment`, `recipe_sha256`, `step`, `samples_seen`, `optimizer`, `scaler`, and
`rng` (one entry per process). It is written to a temporary file in the same folder, fsync'd, and
renamed over its final name; then `latest` (a text file holding that name) is replaced the same way.
A run killed at any instant therefore leaves either the previous checkpoint or the new one, never a
torn file. Everything in it loads with `weights_only=True`.

`newest_readable` is the requeue mode's reader: the checkpoint `latest` names if it reads, else the
newest step file that does, each unreadable one reported in one line. `prune_checkpoints` keeps the
newest N step files up to the current one (never the one `latest` names).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# checkpoint_name, point_latest and step_files are the run folder's, re-exported for launch's callers
from runfolder import (  # noqa: F401
    LATEST,
    STEP_FILE,
    atomic_write,
    checkpoint_name,
    latest_checkpoint,
    point_latest,
    step_files,
)
from towers.checkpoints import CheckpointError, read_checkpoint


def save_checkpoint(folder: Path, step: int, payload: dict) -> Path:
    """Write `payload` as step `step` atomically and point `latest` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_name(step)
    if latest_checkpoint(folder) == path:
        raise FileExistsError(f"{path}: 'latest' names it; a checkpoint is never overwritten in place")
    atomic_write(path, lambda f: torch.save(payload, f))
    point_latest(folder, path)
    return path


def newest_readable(folder: Path, report: Callable[[str], None]) -> tuple[Path, dict] | None:
    """(path, contents) of the checkpoint `latest` names, else of the newest step file that reads;
    None when none does. Each pointer or file that cannot be read is reported in one line."""
    candidates = []
    pointer = folder / LATEST
    if pointer.is_file():
        named = latest_checkpoint(folder)
        if STEP_FILE.fullmatch(named.name) and named.is_file():
            candidates.append(named)
        else:
            report(f"{pointer}: names {pointer.read_text().strip()[:80]!r}, not a checkpoint file here; "
                   "trying the newest step file")
    candidates += [path for _, path in step_files(folder) if path not in candidates]
    for path in candidates:
        try:
            return path, read_checkpoint(path)
        except CheckpointError as error:
            report(f"{error}; trying an older one")
    return None


def prune_checkpoints(folder: Path, keep: int, current: Path, pinned: tuple[int, ...] = ()) -> list[Path]:
    """Delete all but the newest `keep` step files up to `current` (0 keeps all); files of later steps
    (left by a run that fell back to an older checkpoint) are replaced as the run reaches them. Steps in
    `pinned` (cooldown branch points) are never deleted and not counted."""
    if keep == 0:
        return []
    steps = dict((path, step) for step, path in step_files(folder) if step not in pinned)
    older = [path for path, step in steps.items() if step <= steps.get(current, -1) and path != current]
    older.sort(key=steps.get, reverse=True)
    removed = older[keep - 1:]
    named = latest_checkpoint(folder)
    for path in removed:
        if path != named:
            path.unlink(missing_ok=True)
    return removed


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
