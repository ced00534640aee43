"""Train a CLIP tower pair with the one recipe: `accelerate launch launch/train.py --tower mixer`.

The tower flags (`--tower`, `--image-tower`, `--text-tower`, `--variant`) choose what is compared;
every other flag is the recipe (`launch/config.py`), identical for every tower. Without
`--train-data` the run uses the embedded `toy` set of `--toy-seed`/`--toy-task` (generated on first use),
through the same WebDataset code path as a LAION run. A run writes `runs/<name>/`: config.json, metrics.jsonl,
TensorBoard events and atomic checkpoints (`--save-every`, `latest` pointer, the newest
`--keep-checkpoints` kept) and out.log (what it printed, appended by every launch); `--resume latest`
continues exactly where the last checkpoint left off, or starts the run when it has none (open_clip's
meaning; the data position is stream state, so resuming costs the same at any step), and `--resume auto`
(requeued jobs) starts the run when there is no readable checkpoint, else continues from the newest
readable one. Zero-shot accuracy on that toy set's val split (when training on toy) and on ImageNet
(`--imagenet-val PATH`: ILSVRC or ImageNetV2 folder, or shards with `.cls`) is scored at the end and
every `--eval-every` steps by `benchmarks.evaluations` (the runners' code), every process scoring its share.

    accelerate launch launch/train.py --tower transformer        # the default run (its time: docs/results.md)
    accelerate launch --config_file launch/accelerate/cpu.yaml launch/train.py --tower mixer --steps 20
    accelerate launch launch/train.py --tower mixer --imagenet-val /data/imagenet/val --eval-every 150
    python launch/train.py --help
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from tqdm import tqdm

import towers
from benchmarks.data.files import InputError
from benchmarks.data.shards import SKIP_KINDS, ShardSpecError
from benchmarks.encoder import ModelEncoder
from benchmarks.evaluations import EVALUATIONS, eval_set, zero_shot_eval
from benchmarks.provenance import code_version, command_line, library_versions
from launch.checkpointing import WRITING, CheckpointWriter, capture_rng_state
from launch.config import (
    Experiment,
    RunOptions,
    experiment_dict,
    experiment_identity,
    parse_experiment,
)
from launch.data import data_identity, get_train_loader, toy_split
from launch.faults import (
    PREEMPTED_EXIT_STATUS,
    Preempted,
    StopRequests,
    clear_preempted,
    collective_timeout,
    failure_line,
    start_loader_processes,
    unusable_gpu_line,
    write_preempted,
)
from launch.process_device import cpu_threads, no_accelerator, training_device
from launch.run_record import (
    MetricsLog,
    OutputLog,
    TrackerUnavailableError,
    log_output_to,
    make_trackers,
    next_commands,
)
from launch.run_resume import RunError, RunResume
from launch.trainer import (
    ContrastiveStep,
    NonFiniteLossError,
    build_optimizer,
    compile_model,
    ddp_options,
    device_settings,
    enable_tf32,
    keeps_running_statistics,
    micro_batch_stream,
)
from runfolder import RunFolder
from runfolder.anchor import end_of_run_line
from runfolder.errors import run_main
from runfolder.records import ConfigRecord, final_eval_record, flops_per_sample, write_json
from runfolder.vocabulary import eval_key
from towers.precision import MIXED_PRECISION

# Without a terminal (a SLURM log) a progress line this often: ~60 lines an hour, whatever the step time
PROGRESS_LINE_SECONDS = 60.0


class CheckpointNotWritten(Exception):
    """A checkpoint could not be written (e.g. a full disk): the run ends; `latest` names an older one."""


class TrainingRun:
    """One run: built here, resumed or branched by its `RunResume` (launch/run_resume.py), then `train()`
    loops the steps and evaluates; checkpoints and stop requests are handled at step boundaries."""

    def __init__(self, experiment: Experiment, options: RunOptions, accelerator: Accelerator,
                 precision: dict | None = None):
        self.experiment, self.options, self.accelerator = experiment, options, accelerator
        self.precision = precision or {"requested": experiment.recipe.precision,
                                       "resolved": experiment.recipe.precision}
        self.recipe = experiment.recipe
        self.main = accelerator.is_main_process
        self.started = time.time()
        data = data_identity(self.recipe.train_data)
        self.identity = experiment_identity(experiment, accelerator.num_processes, data)
        self.recipe_sha256 = self.recipe.sha256(accelerator.num_processes, data)
        set_seed(self.recipe.seed)  # same initial weights on every process
        self.model = towers.build_model(**experiment.model_kwargs())
        self.folder = RunFolder(run_directory(experiment, options))
        self.run_dir, self.checkpoints = self.folder.path, self.folder.checkpoints
        self.step, self.samples_seen = 0, 0
        self.writer = CheckpointWriter(self.checkpoints, options.keep_checkpoints, tuple(options.keep_steps))
        self.writing = False  # a checkpoint write is pending (on rank 0)
        # once a run (each resolution stats and globs the sets' paths on every rank); bad --imagenet-val:
        # one line now, not at the first eval hours later
        self.eval_sets = self.resolve_eval_sets()
        self.resume = RunResume(options, self.recipe, self.identity, self.folder, self.model, accelerator)
        resume_state = self.resume.start_state()
        if options.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        optimizer = build_optimizer(self.model, self.recipe)
        if resume_state:
            optimizer.load_state_dict(resume_state["optimizer"])
        # Compiled inside DDP, as PyTorch advises (see launch.trainer.compile_model)
        trained = compile_model(self.model) if options.compile else self.model
        self.ddp_model, self.optimizer = accelerator.prepare(trained, optimizer)
        if resume_state:
            self.step, self.samples_seen = self.resume.restore(resume_state)
        self.step_fn = ContrastiveStep(accelerator, self.ddp_model, self.optimizer, self.recipe)
        self.loader = get_train_loader(
            self.recipe.train_data, image_size=self.model.image_size, batch_size=self.recipe.batch_size,
            workers=options.workers, seed=self.recipe.seed, toy_seed=self.recipe.toy_seed,
            rank=accelerator.process_index, world_size=accelerator.num_processes,
            state=resume_state["data"][accelerator.process_index] if resume_state else None,
            context_length=self.recipe.context_length, toy_task=self.recipe.toy_task,
            pin_memory=accelerator.device.type == "cuda", finish_images=False,
            decoder=self.recipe.decoder, decode_device=accelerator.device,
            shard_read_timeout=options.shard_read_timeout)
        finish = self.loader.finish  # uint8 batches are finished on the device, after the copy
        self.finish = finish.to(accelerator.device) if finish is not None else None

    # --- setup ------------------------------------------------------------------------------------
    def write_config(self) -> dict:
        with torch.device("meta"):
            cost = towers.profile(towers.build_model(**self.experiment.model_kwargs()))
        world = self.accelerator.num_processes
        config = ConfigRecord(
            name=self.run_dir.name, model_name=self.model.model_name,
            experiment=experiment_dict(self.experiment), recipe_sha256=self.recipe_sha256,
            recipe_identity=self.identity["recipe"], run_options=dataclasses.asdict(self.options),
            command=command_line(), **code_version(), versions=library_versions(), world_size=world,
            global_batch_size=self.recipe.batch_size * world * self.recipe.accum,
            device=str(self.accelerator.device), torch_threads=torch.get_num_threads(),
            cpu_capability=torch.backends.cpu.get_cpu_capability(), precision=self.precision,
            device_settings=device_settings(self.accelerator.device, self.ddp_model),
            params={k: cost[k] for k in ("image_params", "text_params", "total_params")},
            flops_per_sample=flops_per_sample(cost["image_gflops"], cost["text_gflops"]),
            resumed_from=self.resume.state.resumed_from,
            branched_from=self.resume.state.branched_from,
        ).write(self.folder.config)
        return config

    # --- the loop ---------------------------------------------------------------------------------
    def checkpoint(self, wait: bool = False) -> str | None:
        """Checkpoint this step: rank 0 copies the state to host memory (all the other processes wait
        for) and writes it in the background (`CheckpointWriter`); `wait`: until it is on disk. None, or
        the one-line failure of this write or of the previous one, which it waits for first (a full
        disk: the older checkpoints and `latest` are left as they were, the file is renamed only when
        whole). Every process gets the same answer."""
        failure = self._write_outcome(wait=True)
        if failure:
            return failure
        rng = gather_object([capture_rng_state()])  # every process's own RNG, in rank order
        data = gather_object([self.loader.state_dict()])  # and its sample stream's position
        if self.main:
            scaler = self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None
            self.writer.start(self.step, {
                "model_config": self.model.model_config, "state_dict": self.model.state_dict(),
                "experiment": experiment_dict(self.experiment), "experiment_identity": self.identity,
                "recipe_sha256": self.recipe_sha256, "step": self.step, "samples_seen": self.samples_seen,
                "optimizer": self.optimizer.state_dict(), "scaler": scaler, "rng": rng, "data": data})
        self.writing = True
        return self._write_outcome(wait=True) if wait else None

    def _write_outcome(self, wait: bool) -> str | None:
        """Rank 0's word on the background write: None (none pending, or written), else its failure;
        WRITING counts as None. A collective only while a write is pending (every process knows)."""
        if not self.writing:
            return None
        outcome = broadcast_object_list([self.writer.outcome(wait) if self.main else None])[0]
        self.writing = outcome == WRITING
        return None if outcome == WRITING else outcome

    def _latest_named(self) -> str:
        latest = self.folder.latest()
        return f"`latest` names {latest.name}" if latest else "no checkpoint yet (`latest` absent)"

    def _stop_here(self, saved: bool) -> None:
        """Every process agreed to stop at this step: say so, leave the marker the sbatch script
        requeues on, and end with Preempted (exit status 75)."""
        if self.main:
            latest = self.folder.latest()
            write_preempted(self.run_dir, self.step, self.stop.received, latest.name if latest else None)
        self.accelerator.wait_for_everyone()
        saved_text = f"checkpoint step {self.step} written" if saved else \
            f"the checkpoint of step {self.step} was NOT written, {self._latest_named()}"
        received = self.stop.received or "on another process"
        raise Preempted(f"preempted: a stop signal ({received}) reached the run; all "
                        f"{self.accelerator.num_processes} processes stopped at step {self.step}, "
                        f"{saved_text}; exit status {PREEMPTED_EXIT_STATUS}: continue with --resume auto")

    def resolve_eval_sets(self) -> dict[str, dict]:
        """Zero-shot sets scored at each eval, by name (--evals), resolved by the registry of evaluations
        (`benchmarks.evaluations.eval_set`, the runner's too). Default: the val split of the recipe's toy
        set on toy, ImageNet with --imagenet-val."""
        options, toy = self.options, (self.recipe.toy_seed, self.recipe.toy_task)
        if options.evals is not None:
            names = [name.strip() for name in options.evals.split(",") if name.strip()]
        else:
            names = ["toy"] if self.recipe.train_data is None else []
            names += ["imagenet"] if options.imagenet_val else []
        sets = {}
        for name in names:  # toy: the recipe's toy set, scored with the held-out classes it records
            data = toy_split("val", *toy) if name == "toy" else options.imagenet_val
            try:  # ImageNet's 50k JPEGs decode in --workers processes beside the model
                sets[name] = eval_set(name, data, options.eval_templates, options.workers)
            except InputError as error:
                flag = "--imagenet-val" if name == "imagenet" else "--evals"
                raise RunError(f"{flag} {data if name == 'imagenet' else options.evals}: {error}") from None
        return sets

    def evaluate(self) -> dict:
        """Every process scores its share of each zero-shot set through the benchmark's own code; the
        shares meet in the benchmark's gathers, so no process waits out another's solo evaluation."""
        encoder = ModelEncoder(self.model, self.accelerator.device)
        share = {"rank": self.accelerator.process_index, "world_size": self.accelerator.num_processes}
        result, shown = {}, []
        for name, chosen in self.eval_sets.items():
            try:
                scores = zero_shot_eval(encoder, limit=self.options.eval_samples, cache=False, progress=False,
                                        **chosen, **share)
            except InputError as error:
                raise RunError(str(error)) from None
            logged = EVALUATIONS[name].logged_keys
            result.update({eval_key(name, k): v for k, v in scores.items() if k in logged})
            shown.append(EVALUATIONS[name].summary(scores))
        if self.main and result:
            self.log.log({"step": self.step, "samples_seen": self.samples_seen, **result})
            tqdm.write(f"step {self.step}: " + "; ".join(shown))
        return result

    def _log_step(self, info: dict, interval: dict) -> None:
        if self.main:
            elapsed = time.perf_counter() - interval["start"]
            if self.progress_lines and (time.perf_counter() - self.last_progress_line >= PROGRESS_LINE_SECONDS
                                        or self.step == self.recipe.steps):
                self.last_progress_line = time.perf_counter()
                rate, wait = interval["samples"] / elapsed, interval["data_wait"] / elapsed
                print(f"step {self.step}/{self.recipe.steps}: loss {info['loss']:.4f}, {rate:.1f} samples/s, "
                      f"data wait {wait:.0%}, "
                      f"{time.time() - self.started:.0f} s since start", flush=True)
            self.log.log({
                "step": self.step, "samples_seen": self.samples_seen, "loss": info["loss"],
                "lr": self.optimizer.param_groups[0]["lr"], "logit_scale": info["logit_scale"],
                "samples_per_s": interval["samples"] / elapsed,
                "data_wait_frac": interval["data_wait"] / elapsed,
                "grad_norm": info["grad_norm"], "skipped": info["counts"],
                "nonfinite_steps": info["nonfinite_total"],
                # the allocator's high-water mark (a host counter, no device sync); CUDA only
                **({"max_memory_gib": torch.cuda.max_memory_allocated(self.accelerator.device) / 2**30}
                   if self.accelerator.device.type == "cuda" else {})})
        interval.update(start=time.perf_counter(), samples=0, data_wait=0.0)

    def _loop(self, bar: tqdm) -> None:
        recipe, options = self.recipe, self.options
        global_batch = recipe.batch_size * self.accelerator.num_processes * recipe.accum
        interval = {"start": time.perf_counter(), "samples": 0, "data_wait": 0.0}
        stream = micro_batch_stream(self.loader, recipe.accum, self.accelerator.device, interval,
                                    self.finish)
        self.ddp_model.train()
        while self.step < recipe.steps:
            self.step_fn(next(stream), self.step)
            self.step += 1
            self.samples_seen += global_batch
            interval["samples"] += global_batch
            bar.update(1)
            last = self.step == recipe.steps
            log = self.step % options.log_every == 0 or last
            save = (bool(options.save_every) and self.step % options.save_every == 0
                    or self.step in options.keep_steps) and not last
            stop = saved = False
            if log or save or self.stop.due(self.step):  # other steps read nothing: the host runs ahead
                # The step's one host read (a collective: every process takes part), carrying each
                # process's stop vote too; it raises on a streak of non-finite steps.
                counts = {kind: self.loader.skipped().get(kind, 0) for kind in SKIP_KINDS}
                info = self.step_fn.read({**counts, **self.stop.vote()})
                stop = self.stop.agreed(info["counts"])  # a signal to any process stops all at this step
                log, save = log or stop, save or stop
                bar.set_postfix(loss=f"{info['loss']:.3f}")
                if log:
                    self._log_step(info, interval)
                # A failed write ends the run a log step after it fails, not a checkpoint later
                failure = self._write_outcome(wait=False)
                if save and not failure and info["nonfinite_in_a_row"] == 0:  # never inside a streak
                    failure = self.checkpoint(wait=stop)  # a stop waits: the marker follows the file
                    saved = failure is None
                if failure and not stop:
                    raise CheckpointNotWritten(f"{failure}; {self._latest_named()}, intact: free space, "
                                               "then --resume auto")
            if stop:
                self._stop_here(saved)
            if options.eval_every and self.step % options.eval_every == 0 and not last:
                self.evaluate()

    def train(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.main:  # what this launch printed so far and prints from now on, appended
            log_output_to(self.folder.out_log)
        self.accelerator.wait_for_everyone()
        self.log = (MetricsLog(self.run_dir, self.started, self.accelerator, self.write_config())
                    if self.main else None)
        if self.main:
            clear_preempted(self.run_dir)
        self.stop = StopRequests()
        self.stop.install()
        # A bar on a terminal; in a SLURM log (not a TTY) its carriage-return refresh every 0.1 s would
        # pile up, so there `_log_step` prints a plain line every PROGRESS_LINE_SECONDS instead.
        self.progress_lines = self.main and not sys.stderr.isatty()
        self.last_progress_line = -PROGRESS_LINE_SECONDS
        bar = tqdm(total=self.recipe.steps, initial=self.step, disable=not self.main or self.progress_lines,
                   unit="step", desc=self.run_dir.name, dynamic_ncols=True)
        self.bar_closed = False
        try:
            try:
                self._loop(bar)
            finally:  # torch's SIGCHLD handler can raise inside close(), before its newline: main() adds one
                bar.close()
                self.bar_closed = True
            # A run resumed at its end has its final checkpoint already
            failure = self.checkpoint(wait=True) if self.step != self.resume.state.resumed_step else None
            if failure:
                raise CheckpointNotWritten(f"the final checkpoint (step {self.step}) was not written: "
                                           f"{failure}; {self._latest_named()}: free space, then "
                                           "--resume auto")
            final = self.evaluate()
            if self.main:
                write_json(self.folder.final_eval, final_eval_record(self.step, final))
                print(end_of_run_line(self.run_dir), flush=True)
                print(next_commands(self.run_dir, self.recipe.train_data, self.options.imagenet_val),
                      flush=True)
        finally:
            self.stop.uninstall()
            if self.main:
                failure = self.writer.outcome(wait=True)  # a run failing elsewhere still finishes its write
                if failure:
                    print(f"warning: {failure}; {self._latest_named()}", file=sys.stderr)
                self.log.close()
        return final


def run_directory(experiment: Experiment, options: RunOptions) -> Path:
    """RUN = --runs-dir / (--name, else `<model name>-seed<seed>`)."""
    model = towers.model_name(experiment.image_tower, experiment.text_tower, experiment.variant)
    return Path(options.runs_dir) / (options.name or f"{model}-seed{experiment.recipe.seed}")


def main(argv: list[str] | None = None) -> int:
    """Train; what the main process prints also goes to RUN/out.log once the run folder exists."""
    with OutputLog():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    experiment, options = parse_experiment(argv)
    on_cpu = no_accelerator()
    unusable = unusable_gpu_line() if on_cpu and not options.allow_cpu else None
    if unusable:  # GPUs were asked for: never train 16 processes on CPU over gloo instead
        print(f"error: {unusable}", file=sys.stderr)
        return 2
    try:
        trackers = make_trackers(options.report_to, run_directory(experiment, options), options.wandb_project)
    except TrackerUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    requested = experiment.recipe.precision
    recipe, why, warning = experiment.recipe.with_precision(training_device(on_cpu))
    experiment = dataclasses.replace(experiment, recipe=recipe)
    start_method = multiprocessing.get_start_method(allow_none=True)
    start_loader_processes(options.loader_start_method or ("fork" if on_cpu else "forkserver"))
    accelerator = Accelerator(mixed_precision=MIXED_PRECISION[recipe.precision], cpu=on_cpu,
                              log_with=trackers,
                              kwargs_handlers=[collective_timeout(options.collective_timeout),
                                               ddp_options(keeps_running_statistics(experiment.model_kwargs()))])
    enable_tf32(accelerator.device)
    try:
        return _train(accelerator, experiment, options, {"requested": requested, "resolved": recipe.precision,
                                                         "why": why}, warning)
    finally:  # every exit, errors too: NCCL's communicators are released, not left to the interpreter's end
        with contextlib.suppress(RuntimeError):  # a group a dead peer broke: nothing left to release
            accelerator.state.destroy_process_group()
        multiprocessing.set_start_method(start_method, force=True)  # main() may run inside another program


def _train(accelerator: Accelerator, experiment: Experiment, options: RunOptions, precision: dict,
           warning: str | None) -> int:
    if accelerator.is_main_process:  # the run's first lines (stdout: stderr is for errors): precision, why
        print(f"precision: {precision['resolved']} ({precision['why']})", flush=True)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    run = None
    try:
        if accelerator.device.type == "cpu":
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
            torch.set_num_threads(cpu_threads(options.cpu_threads, local_processes))
        run = TrainingRun(experiment, options, accelerator, precision=precision)
        run.train()
    except (RunError, towers.CheckpointError, ShardSpecError) as error:  # bad input
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Preempted as stop:
        if accelerator.is_main_process:
            print(stop, file=sys.stderr, flush=True)
        return PREEMPTED_EXIT_STATUS
    except (NonFiniteLossError, CheckpointNotWritten) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # a killed loader worker, a dead or hung peer: one line, status 1
        hint = (run._latest_named() if run else "no checkpoint yet") + "; `--resume auto` continues from it"
        line = failure_line(error, accelerator.process_index, getattr(getattr(run, "loader", None),
                            "worker_pids", []), options.collective_timeout, hint)
        if line is None:
            raise
        fresh_line = "" if run is None or getattr(run, "bar_closed", True) else "\n"
        print(f"{fresh_line}error: {line}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
