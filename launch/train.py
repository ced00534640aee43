"""Train a CLIP tower pair with the one recipe: `accelerate launch launch/train.py --tower mixer`.

The tower flags (`--tower`, `--image-tower`, `--text-tower`, `--variant`) choose what is compared;
every other flag is the recipe (`launch/config.py`), identical for every tower. Without
`--train-data` the run uses the embedded `toy` set (generated on first use), through the same
WebDataset code path as a LAION run. A run writes `runs/<name>/`: config.json, metrics.jsonl,
TensorBoard events and atomic checkpoints (`--save-every`, `latest` pointer, the newest
`--keep-checkpoints` kept); `--resume latest` continues exactly where the last checkpoint left off
(the data position is stream state, so resuming costs the same at any step), and `--resume auto`
(requeued jobs) starts the run when there is no readable checkpoint, else continues from the newest
readable one. Zero-shot accuracy on the toy val split (when training on toy) and on ImageNet
(`--imagenet-val PATH`: ILSVRC or ImageNetV2 folder, or shards with `.cls`) is scored at the end and
every `--eval-every` steps by `benchmarks.imagenet_zeroshot`, every process scoring its share.

    accelerate launch launch/train.py --tower transformer                 # the default run (README: its time)
    accelerate launch --config_file launch/accelerate/cpu.yaml launch/train.py --tower mixer --steps 20
    accelerate launch launch/train.py --tower mixer --imagenet-val /data/imagenet/val --eval-every 150
    python launch/train.py --help
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from tqdm import tqdm

import towers
from benchmarks.data.files import InputError
from benchmarks.data.imagenet import IMAGEFOLDER_LAYOUT, is_shard_spec
from benchmarks.data.shards import SKIP_KINDS, ShardSpecError
from benchmarks.encoder import ModelEncoder
from benchmarks.imagenet_zeroshot import zero_shot_eval
from benchmarks.provenance import command_line, git_commit, library_versions, write_json
from launch.checkpointing import (
    capture_rng_state,
    newest_readable,
    point_latest,
    prune_checkpoints,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from launch.config import (
    Experiment,
    RunOptions,
    experiment_dict,
    experiment_differences,
    experiment_identity,
    parse_experiment,
)
from launch.data import data_identity, get_train_loader
from launch.run_record import MetricsLog, next_commands
from launch.trainer import (
    ContrastiveStep,
    NonFiniteLossError,
    build_optimizer,
    compile_model,
    micro_batch_stream,
)

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class RunError(Exception):
    """Bad input found while setting a run up; reported as one line, exit status 2."""


class TrainingRun:
    def __init__(self, experiment: Experiment, options: RunOptions, accelerator: Accelerator):
        self.experiment, self.options, self.accelerator = experiment, options, accelerator
        self.recipe = experiment.recipe
        self.main = accelerator.is_main_process
        self.started = time.time()
        data = data_identity(self.recipe.train_data)
        self.identity = experiment_identity(experiment, accelerator.num_processes, data)
        self.recipe_sha256 = self.recipe.sha256(accelerator.num_processes, data)
        set_seed(self.recipe.seed)  # same initial weights on every process
        self.model = towers.build_model(**experiment.model_kwargs())
        name = options.name or f"{self.model.model_name}-seed{self.recipe.seed}"
        self.run_dir = Path(options.runs_dir) / name
        self.checkpoints = self.run_dir / "checkpoints"
        self.step, self.samples_seen, self.resumed_step = 0, 0, None
        self.eval_sets()  # bad --imagenet-val: one line now
        resume_state = self._resume_state()
        if options.init_from and not resume_state:
            self._init_from(options.init_from)
        if options.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        optimizer = build_optimizer(self.model, self.recipe)
        if resume_state:
            optimizer.load_state_dict(resume_state["optimizer"])
        # Compiled inside DDP, as PyTorch advises (see launch.trainer.compile_model)
        trained = compile_model(self.model) if options.compile else self.model
        self.ddp_model, self.optimizer = accelerator.prepare(trained, optimizer)
        if resume_state:
            self._restore(resume_state)
        self.step_fn = ContrastiveStep(accelerator, self.ddp_model, self.optimizer, self.recipe)
        self.loader = get_train_loader(
            self.recipe.train_data, image_size=self.model.image_size, batch_size=self.recipe.batch_size,
            workers=options.workers, seed=self.recipe.seed,
            rank=accelerator.process_index, world_size=accelerator.num_processes,
            state=resume_state["data"][accelerator.process_index] if resume_state else None,
            context_length=self.recipe.context_length,
            pin_memory=accelerator.device.type == "cuda", finish_images=False)
        finish = self.loader.finish  # uint8 batches are finished on the device, after the copy
        self.finish = finish.to(accelerator.device) if finish is not None else None

    # --- setup ------------------------------------------------------------------------------------
    def _resume_state(self) -> dict | None:
        resume = self.options.resume
        if resume == "auto":  # the requeue mode: the newest readable checkpoint, else start the run
            found = newest_readable(self.checkpoints, self._report) if self.checkpoints.is_dir() else None
            if found is None:
                self._sync_latest(None)
                return None
            path, state = found
        elif not resume:
            if (self.run_dir / "config.json").exists():
                raise RunError(f"run folder {self.run_dir} already holds a run: pass --resume latest (or "
                               f"auto) to continue it, or another --name")
            return None
        else:
            try:
                path = resolve_checkpoint(resume, self.checkpoints)
            except FileNotFoundError as error:
                raise RunError(str(error)) from None
            state = towers.read_checkpoint(path)
        self._check_resumable(path, state)
        if path.resolve().parent == self.checkpoints.resolve():  # e.g. a fallback or an older step
            self._sync_latest(path)
        towers.load_weights(self.model, state["state_dict"], str(path))
        self.resumed_from = str(path)
        return state

    def _report(self, message: str) -> None:
        if self.main:
            print(f"warning: {message}", file=sys.stderr)

    def _sync_latest(self, path) -> None:
        """`latest` names what the run resumes from (none when auto starts it afresh), so that nothing
        it names is ever overwritten as the run goes on."""
        if self.main and (self.checkpoints / "latest").is_file() and \
                (path is None or (self.checkpoints / "latest").read_text().strip() != path.name):
            point_latest(self.checkpoints, path)
        self.accelerator.wait_for_everyone()

    def _check_resumable(self, path, state: dict) -> None:
        """Refuse, in one line, a checkpoint of another experiment, scale or sample stream."""
        saved = state.get("experiment_identity")
        if saved is None or "data" not in state:
            raise RunError(f"--resume {path}: checkpoint holds no data stream state (written by an older "
                           "version of launch/train.py); start a new run")
        differences = experiment_differences(saved, self.identity)
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

    def _restore(self, state: dict) -> None:
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.resumed_step = self.step
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"][self.accelerator.process_index])

    def write_config(self) -> None:
        with torch.device("meta"):
            cost = towers.profile(towers.build_model(**self.experiment.model_kwargs()))
        world = self.accelerator.num_processes
        write_json(self.run_dir / "config.json", {
            "name": self.run_dir.name, "model_name": self.model.model_name,
            "experiment": experiment_dict(self.experiment), "recipe_sha256": self.recipe_sha256,
            "recipe_identity": self.identity["recipe"], "run_options": dataclasses.asdict(self.options),
            "command": command_line(),
            "git_commit": git_commit(), "versions": library_versions(), "world_size": world,
            "global_batch_size": self.recipe.batch_size * world * self.recipe.accum,
            "device": str(self.accelerator.device), "torch_threads": torch.get_num_threads(),
            "params": {k: cost[k] for k in ("image_params", "text_params", "total_params")},
            "flops_per_sample": {"image_gflops": cost["image_gflops"], "text_gflops": cost["text_gflops"],
                                 # forward + backward = 3 x forward, the usual estimate
                                 "train_gflops": 3 * (cost["image_gflops"] + cost["text_gflops"])},
            "resumed_from": getattr(self, "resumed_from", None),
        })

    # --- the loop ---------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        rng = gather_object([capture_rng_state()])  # every process's RNG, in rank order
        data = gather_object([self.loader.state_dict()])  # and its sample stream's position
        if self.main:
            scaler = self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None
            path = save_checkpoint(self.checkpoints, self.step, {
                "model_config": self.model.model_config, "state_dict": self.model.state_dict(),
                "experiment": experiment_dict(self.experiment), "experiment_identity": self.identity,
                "recipe_sha256": self.recipe_sha256, "step": self.step, "samples_seen": self.samples_seen,
                "optimizer": self.optimizer.state_dict(), "scaler": scaler, "rng": rng, "data": data,
            })
            prune_checkpoints(self.checkpoints, self.options.keep_checkpoints, path)
        self.accelerator.wait_for_everyone()

    def eval_sets(self) -> dict[str, dict]:
        """Zero-shot sets scored at each eval: the toy val split when training on toy, ImageNet with
        --imagenet-val (checked before training starts, not at the first eval hours later)."""
        sets = {"toy": {"dataset": "toy"}} if self.recipe.train_data is None else {}
        if self.options.imagenet_val:
            data = self.options.imagenet_val
            if not is_shard_spec(data) and not Path(data).is_dir():
                raise RunError(f"--imagenet-val {data}: no such directory; expected {IMAGEFOLDER_LAYOUT} "
                               "or WebDataset shards with .cls")
            sets["imagenet"] = {"dataset": "imagenet", "data": data, "templates": self.options.eval_templates,
                                "workers": self.options.workers}  # 50k JPEGs: decode beside the model
        return sets

    def evaluate(self) -> dict:
        """Every process scores its share of each zero-shot set through the benchmark's own code; the
        shares meet in the benchmark's gathers, so no process waits out another's solo evaluation."""
        encoder = ModelEncoder(self.model, self.accelerator.device)
        share = {"rank": self.accelerator.process_index, "world_size": self.accelerator.num_processes}
        result, shown = {}, []
        for name, eval_set in self.eval_sets().items():
            try:
                scores = zero_shot_eval(encoder, limit=self.options.eval_samples, cache=False, progress=False,
                                        **eval_set, **share)
            except InputError as error:
                raise RunError(str(error)) from None
            result.update({f"eval/{name}_{k}": v for k, v in scores.items()
                           if k in ("top1", "top5", "mean_per_class_recall", "colour_acc", "shape_acc", "n")})
            result[f"eval/{name}_top1_ci95"] = scores.get("top1_ci95")
            shown.append(f"{name} zero-shot top-1 {scores['top1']:.1f}%" + (
                f" (colour {scores['colour_acc']:.1f}%, shape {scores['shape_acc']:.1f}%)"
                if "shape_acc" in scores else f", top-5 {scores['top5']:.1f}%"))
        if self.main and result:
            self.log.log({"step": self.step, "samples_seen": self.samples_seen, **result})
            tqdm.write(f"step {self.step}: " + "; ".join(shown))
        return result

    def _log_step(self, info: dict, interval: dict) -> None:
        if self.main:
            elapsed = time.perf_counter() - interval["start"]
            self.log.log({
                "step": self.step, "samples_seen": self.samples_seen, "loss": info["loss"],
                "lr": self.optimizer.param_groups[0]["lr"], "logit_scale": info["logit_scale"],
                "samples_per_s": interval["samples"] / elapsed,
                "data_wait_frac": interval["data_wait"] / elapsed,
                "grad_norm": info["grad_norm"], "skipped": info["counts"],
                "nonfinite_steps": info["nonfinite_total"]})
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
            save = bool(options.save_every) and self.step % options.save_every == 0 and not last
            if log or save:  # other steps read nothing back: the host runs ahead of the device
                # The step's one host read (a collective: every process takes part); it raises on a
                # streak of non-finite steps.
                info = self.step_fn.read({kind: self.loader.skipped().get(kind, 0) for kind in SKIP_KINDS})
                bar.set_postfix(loss=f"{info['loss']:.3f}")
                if log:
                    self._log_step(info, interval)
                if save and info["nonfinite_in_a_row"] == 0:  # never checkpoint inside a non-finite streak
                    self.checkpoint()
            if options.eval_every and self.step % options.eval_every == 0 and not last:
                self.evaluate()

    def train(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.log = MetricsLog(self.run_dir, self.started) if self.main else None
        if self.main:
            self.write_config()
        bar = tqdm(total=self.recipe.steps, initial=self.step, disable=not self.main, unit="step",
                   desc=self.run_dir.name, dynamic_ncols=True)
        try:
            with bar:
                self._loop(bar)
            if self.step != self.resumed_step:  # a run resumed at its end has its last checkpoint
                self.checkpoint()
            final = self.evaluate()
            if self.main:
                write_json(self.run_dir / "final_eval.json", {"step": self.step, **final})
                print(next_commands(self.run_dir), flush=True)
        finally:
            if self.main:
                self.log.close()
        return final


def cpu_threads(requested: int | None, processes_on_node: int) -> int:
    """Torch threads for one CPU training process: `requested`, else the cores this process may run
    on shared by the processes on this node (as `accelerate launch --cpu` chooses)."""
    if requested:
        return requested
    import psutil  # an Accelerate dependency

    cores = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    return max(1, cores // max(1, processes_on_node))


def no_accelerator() -> bool:
    """True on a machine without GPUs (or other torch accelerators): processes then run on CPU and,
    when a launcher started several, join over gloo (accelerate only does so when told `cpu=True`)."""
    has_accelerator = getattr(torch, "accelerator", None)
    return not (has_accelerator.is_available() if has_accelerator else torch.cuda.is_available())


def main(argv: list[str] | None = None) -> int:
    experiment, options = parse_experiment(argv)
    accelerator = Accelerator(mixed_precision=MIXED_PRECISION[experiment.recipe.precision],
                              cpu=no_accelerator())
    if accelerator.device.type == "cpu":
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(cpu_threads(options.cpu_threads, local_processes))
    try:
        TrainingRun(experiment, options, accelerator).train()
    except (RunError, towers.CheckpointError, ShardSpecError) as error:  # bad input
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
