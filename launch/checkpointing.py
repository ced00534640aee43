"""Atomic training checkpoints with a `latest` pointer, and the RNG state of every process (the
folder's layout, the pointer and the atomic writer are `runfolder`'s).

A checkpoint is one `torch.save`d dict: `model_config` + `state_dict` (so `towers.load` reads it as a
model), plus `experiment`, `recipe_sha256`, `step`, `samples_seen`, `optimizer`, `scaler`, and
`rng` (one entry per process). It is written to a temporary file in the same folder, fsync'd, and
renamed over its final name; then `latest` (a text file holding that name) is replaced the same way.
A run killed at any instant therefore leaves either the previous checkpoint or the new one, never a
torn file. Everything in it loads with `weights_only=True`.

`CheckpointWriter` is rank 0's writer: it copies the payload to host memory (the only part the other
processes wait for) and writes it on a thread; the next checkpoint and the end of the run wait for
that write, and a failed write (a full disk: `OSError`, or the `RuntimeError` torch's zip writer raises
while handling one) comes back as one line, never swallowed.

`newest_readable` is the requeue mode's reader: the checkpoint `latest` names if it reads, else the
newest step file that does, each unreadable one reported in one line. `prune_checkpoints` keeps the
newest N step files up to the current one (never the one `latest` names). Checkpoints are read with
`mmap=True`: the processes of a node share the file's pages instead of each holding a copy.
"""

from __future__ import annotations

import random
import threading
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


WRITING = "writing"  # CheckpointWriter.outcome: the write is still going on


def host_copy(value):
    """`value` with every tensor copied to host memory (a fresh copy even of a CPU tensor: training
    goes on changing the live ones while the copy is written)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: host_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [host_copy(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def write_failure(step: int, error: BaseException) -> str:
    """One line for a failed write, naming the OSError behind it (torch's zip writer reports a full disk
    as `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`, raised while handling it)."""
    cause, seen = error, set()
    while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    shown = cause if isinstance(cause, OSError) else error
    text = str(shown).strip().splitlines()[0] if str(shown).strip() else type(shown).__name__
    return f"checkpoint of step {step} not written ({type(shown).__name__}: {text[:200]})"


class CheckpointWriter:
    """Writes checkpoints into `folder` on a background thread, one at a time (see the module
    docstring); after each, prunes to the newest `keep` (never the `pinned` steps)."""

    def __init__(self, folder: Path, keep: int, pinned: tuple[int, ...] = ()) -> None:
        self.folder, self.keep, self.pinned = folder, keep, pinned
        self._thread: threading.Thread | None = None
        self._step, self._error = -1, None

    def start(self, step: int, payload: dict) -> None:
        """Copy `payload` to host memory, then write it on a thread. The previous write must have
        been collected with `outcome(wait=True)`."""
        if self._thread is not None:
            raise RuntimeError("CheckpointWriter.start: the previous write was not collected")
        copy = host_copy(payload)
        self._step, self._error = step, None
        # Not a daemon: an interpreter that exits while a checkpoint is half written waits for it
        self._thread = threading.Thread(target=self._write, args=(step, copy), name=f"checkpoint {step}")
        self._thread.start()

    def _write(self, step: int, payload: dict) -> None:
        try:
            path = save_checkpoint(self.folder, step, payload)
            prune_checkpoints(self.folder, self.keep, path, pinned=self.pinned)
        except BaseException as error:  # noqa: BLE001 - handed to outcome(), which reports it
            self._error = error

    def outcome(self, wait: bool) -> str | None:
        """None when no write is pending or the last one is whole on disk; WRITING while it goes on
        (wait=False); else the one-line failure (`write_failure`). Collects a finished write."""
        if self._thread is None:
            return None
        if not wait and self._thread.is_alive():
            return WRITING
        self._thread.join()
        self._thread, error, self._error = None, self._error, None
        return None if error is None else write_failure(self._step, error)


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
            return path, read_checkpoint(path, mmap=True)
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
    """This process's RNG states, as tensors and plain numbers (weights_only-loadable). On CUDA, only
    its own device's generator: each process of a node sees all 8 GPUs, and restoring the others'
    states would touch (and create contexts on) devices other processes train on."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        device = torch.cuda.current_device()
        cuda = state["cuda"]  # older checkpoints hold a list: every visible device's state
        torch.cuda.set_rng_state(cuda[device] if isinstance(cuda, (list, tuple)) else cuda, device)
