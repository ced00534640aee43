"""Resuming, branching and warm-starting a training run: the component of `launch.train.TrainingRun` that
reads checkpoints back and refuses, in one line, one that belongs to another experiment.

`RunResume` is built by TrainingRun from the run's options, recipe, identity, folder, model and
accelerator; what it decided is its `ResumeState` (config.json records it). `--resume latest|auto|PATH`,
`--branch-from PATH` and `--init-from PATH` end here. Run it through `launch/train.py`;
tests/test_train_run.py and tests/test_faults.py cover it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

import towers
from launch.checkpointing import newest_readable, point_latest, resolve_checkpoint, restore_rng_state
from launch.config import Recipe, RunOptions, experiment_differences, with_legacy_text_mask
from launch.trainer import learning_rate
from runfolder import RunFolder
from runfolder.errors import InputError


class RunError(InputError):
    """Bad input found while setting a run up; reported as one line, exit status 2."""


@dataclasses.dataclass
class ResumeState:
    """Where a run started from: the checkpoint it continued (`--resume`) or branched from
    (`--branch-from`), None for neither, and the step it resumed at (None: it started at step 0)."""

    resumed_from: str | None = None
    branched_from: str | None = None
    resumed_step: int | None = None


class RunResume:
    """Where a run starts from: its own newest checkpoint, another run's (a branch), or fresh."""

    def __init__(self, options: RunOptions, recipe: Recipe, identity: dict, folder: RunFolder,
                 model: torch.nn.Module, accelerator: Accelerator):
        self.options, self.recipe, self.identity = options, recipe, identity
        self.folder, self.run_dir, self.checkpoints = folder, folder.path, folder.checkpoints
        self.model, self.accelerator = model, accelerator
        self.main = accelerator.is_main_process
        self.state = ResumeState()

    def start_state(self) -> dict | None:
        """The checkpoint the run continues or branches from, its weights loaded into the model (the
        optimizer's, the data streams' and the step's are the caller's, with `restore`); None for a fresh
        start, with `--init-from`'s weights when given."""
        state = self._resume_state() or self._branch_state()
        if self.options.init_from and not state:
            self._init_from(self.options.init_from)
        return state

    def _resume_state(self) -> dict | None:
        resume = self.options.resume
        if not resume:
            if self.folder.config.exists():
                raise RunError(f"run folder {self.run_dir} already holds a run: pass --resume latest (or "
                               f"auto) to continue it, or another --name")
            return None
        # Rank 0 chooses and every process reads that file: choosing on each process, a transient read
        # error on one would start the processes at different steps
        path, state, error = None, None, None
        if self.main:
            try:
                path, state = self._choose_checkpoint(resume)
            except RunError as chosen_error:
                error = str(chosen_error)
        path, error = broadcast_object_list([str(path) if path else None, error])
        if error:
            raise RunError(error)
        if path is None:  # auto, and no readable checkpoint: start the run
            self._sync_latest(None)
            return None
        path = Path(path)
        state = self._read_on_every_process(path, state)
        self._check_resumable(path, state)
        if path.resolve().parent == self.checkpoints.resolve():  # e.g. a fallback or an older step
            self._sync_latest(path)
        towers.load_weights(self.model, state["state_dict"], str(path))
        self.state.resumed_from = str(path)
        return state

    def _choose_checkpoint(self, resume: str) -> tuple[Path | None, dict | None]:
        """(path, contents) of the checkpoint --resume names; (None, None) for auto without one."""
        if resume == "auto":  # the requeue mode: the newest readable checkpoint, else start the run
            found = newest_readable(self.checkpoints, self._report) if self.checkpoints.is_dir() else None
            return found if found is not None else (None, None)
        if resume == "latest" and self.folder.latest() is None and not self.folder.step_files():
            # open_clip's --resume latest: a first launch of a requeued script starts the run
            print(f"--resume latest: no checkpoint in {self.checkpoints} yet; starting the run", flush=True)
            return None, None
        try:
            return resolve_checkpoint(resume, self.checkpoints), None
        except FileNotFoundError as error:
            raise RunError(str(error)) from None

    def _read_on_every_process(self, path: Path, state: dict | None) -> dict:
        """`state` (rank 0's, already read) or `path` read here (mmap: the processes of a node share its
        pages); every process ends with one line when any of them cannot read it."""
        failure = None
        if state is None:
            try:
                state = towers.read_checkpoint(path, mmap=True)
            except towers.CheckpointError as error:
                failure = f"process {self.accelerator.process_index}: {error}"
        failures = [line for line in gather_object([failure]) if line]
        if failures:
            raise RunError(f"--resume {self.options.resume}: every process must resume from the checkpoint "
                           f"process 0 chose, {path.name}; {failures[0]}")
        return state

    def _branch_state(self) -> dict | None:
        """--branch-from: a cooldown branch starts where another run's checkpoint left off, exactly as
        this run would have got there itself (the lr agrees at every earlier step)."""
        spec = self.options.branch_from
        if not spec:
            return None
        path = Path(spec)
        if not path.is_file():
            raise RunError(f"--branch-from {spec}: no such checkpoint file")
        state = towers.read_checkpoint(path, mmap=True)
        self._check_resumable(path, state, may_differ=("recipe.steps ", "recipe.cooldown_steps "))
        saved = state["experiment"]["recipe"]
        trunk = dataclasses.replace(self.recipe, steps=saved["steps"], cooldown_steps=saved["cooldown_steps"])
        diverged = next((s for s in range(int(state["step"]))
                         if learning_rate(s, trunk) != learning_rate(s, self.recipe)), None)
        if diverged is not None:
            raise RunError(f"--branch-from {path}: its lr differs from this run's at step {diverged} (a "
                           "branch needs --lr-schedule constant and its cooldown at or after the checkpoint)")
        towers.load_weights(self.model, state["state_dict"], str(path))
        self.state.branched_from = str(path)
        return state

    def _report(self, message: str) -> None:
        if self.main:
            print(f"warning: {message}", file=sys.stderr)

    def _sync_latest(self, path) -> None:
        """`latest` names what the run resumes from (none when auto starts it afresh), so that nothing
        it names is ever overwritten as the run goes on."""
        named = self.folder.latest()
        if self.main and named is not None and (path is None or named.name != path.name):
            point_latest(self.checkpoints, path)
        self.accelerator.wait_for_everyone()

    def _check_resumable(self, path, state: dict, may_differ: tuple[str, ...] = ()) -> None:
        """Refuse, in one line, a checkpoint of another experiment, scale or sample stream (`may_differ`:
        field-name prefixes a branch may change)."""
        saved = state.get("experiment_identity")
        if saved is None or "data" not in state:
            raise RunError(f"--resume {path}: checkpoint holds no data stream state (written by an older "
                           "version of launch/train.py); start a new run")
        differences = [difference for difference in
                       experiment_differences(with_legacy_text_mask(saved), self.identity)
                       if not difference.startswith(may_differ)]
        if differences:
            raise RunError(f"--resume {path}: checkpoint was trained with a different experiment: "
                           + "; ".join(differences))
        world = self.accelerator.num_processes
        if len(state["data"]) != world:
            raise RunError(f"--resume {path}: checkpoint was trained by {len(state['data'])} processes, this "
                           f"run has {world} (each process reads its own sample stream)")
        saved_recipe = state["experiment"]["recipe"]
        split, this_split = (saved_recipe["batch_size"], saved_recipe["accum"]), (self.recipe.batch_size,
                                                                                 self.recipe.accum)
        if split != this_split:
            raise RunError(f"--resume {path}: checkpoint's sample streams give batches of {split[0]} x accum "
                           f"{split[1]} per process, this run {this_split[0]} x accum {this_split[1]}")
        workers = state["data"][0]["workers"]
        if workers != self.options.workers:
            raise RunError(f"--resume {path}: checkpoint's sample streams come from --workers {workers}, "
                           f"this run has --workers {self.options.workers}")

    def _init_from(self, spec: str) -> None:
        state = towers.read_checkpoint(spec)
        towers.load_weights(self.model, state.get("state_dict", state), spec)

    def restore(self, state: dict) -> tuple[int, int]:
        """(step, samples seen) of `state`, once the model is prepared: its grad scaler and this process's
        RNG restored."""
        self.state.resumed_step = int(state["step"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"][self.accelerator.process_index])
        return int(state["step"]), int(state["samples_seen"])

