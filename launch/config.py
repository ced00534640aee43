"""The training recipe and the experiment: frozen dataclasses, their CLI flags and their hash.

`Recipe` holds every number that trains a model; `Experiment` = towers + recipe. The tower choice never
touches the recipe: `--tower mixer` and `--tower transformer` with the same other flags give the same
`recipe_sha256` (the sha256 of the Recipe's canonical JSON, with the data by identity and the global
batch: `Recipe.identity`), and nothing in `launch/` branches on the tower family. Flags are the
fields' names in kebab case (`--warmup-steps`), their help the comments on the fields
(launch/flag_help.py); `--config FILE.yaml|json` supplies values that flags then override. The
committed recipes are `launch/configs/*.yaml` (CONFIGS_DIR); a config may give
`global_batch_size` instead of `batch_size`, split over the launch's processes (torchrun's WORLD_SIZE)
and `accum`, so one file gives one recipe_sha256 on 1, 8 or 16 GPUs.

    from launch.config import parse_experiment
    experiment, run = parse_experiment(["--tower", "mixer", "--steps", "100"])
    recipe, why, warning = experiment.recipe.with_precision("cpu")   # --precision auto -> bf16 or fp32
    recipe.sha256(processes=1, data=launch.data.data_identity(None))
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from launch.decoders import DECODERS
from launch.flag_help import PRECISION_HELP, field_help, precision_value, tracker_names
from runfolder.errors import OneLineParser
from runfolder.vocabulary import IMAGE_INITS, IMAGE_POOLS, PRECISIONS, TOY_TASKS
from runfolder.vocabulary import TEMPLATE_SET_NAMES as EVAL_TEMPLATES
from towers.precision import resolve_precision
from towers.registry import FAMILIES, canonical_variant, model_kwargs, variant_table
from towers.text_mask import DEFAULT_TEXT_MASK, TEXT_MASKS, legacy_text_reading, resolve_token_mixing
from towers.token_mixing import TOKEN_MIXING_MODES

LR_SCHEDULES = ("cosine", "constant")
LOADER_START_METHODS = ("fork", "forkserver", "spawn")  # multiprocessing's, for the DataLoader workers
TOY_CONTEXT_LENGTH = 32
CLIP_CONTEXT_LENGTH = 77
COOLDOWN_FRACTION = 0.2  # the default cooldown, as in the scaling sweep (Hägele et al. 2024)
# The default warmup: the default run's 40 of its 640 steps, so it follows --steps (1 step: none, 20: 1);
# the committed runs that left it out and still replay trained 640 steps: their hashes are unchanged.
WARMUP_FRACTION = 1 / 16
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"  # the committed recipes (docs/usage.md: Training)
# Fields added after runs were committed: hashed only when set away from their default, so every
# committed run's recipe_sha256 stays what it was.
HASHED_WHEN_SET = {"image_init": "library", "image_pool": "library"}
# The toy set's own fields: hashed inside the data's identity (with its version), never beside it.
TOY_FIELDS = {"toy_seed": 0, "toy_task": "standard"}
# Fields whose values are a fixed vocabulary: the flags' choices, and the check of values from --config.
FIELD_CHOICES = {"precision": PRECISIONS, "decoder": DECODERS, "lr_schedule": LR_SCHEDULES,
                 "text_mask": TEXT_MASKS, "image_init": IMAGE_INITS, "image_pool": IMAGE_POOLS,
                 "toy_task": TOY_TASKS, "eval_templates": EVAL_TEMPLATES,
                 "loader_start_method": LOADER_START_METHODS}


@dataclass(frozen=True)
class Recipe:
    """Every number that trains a model. The defaults were tuned once on `toy`, for all towers alike."""

    # Optimizer steps of the run (the default run's budget and its choice: docs/results.md#default-run).
    steps: int = 640
    batch_size: int = 128  # Samples per process and micro-batch; global batch = this x processes x --accum.
    accum: int = 1  # Micro-batches per step; the contrastive loss still sees the whole global batch.
    lr: float = 1e-3  # Peak learning rate of AdamW, reached at the end of warmup.
    # Linear warmup steps, then --lr-schedule; left out, it follows --steps: 1/16 of them
    # (WARMUP_FRACTION), at most what an explicit --cooldown-steps leaves; the resolved number is hashed.
    warmup_steps: int | None = None
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW's beta1 beta2 (open_clip's CLIP values).
    eps: float = 1e-6  # AdamW's epsilon (open_clip's CLIP value).
    weight_decay: float = 0.2  # AdamW weight decay, on >= 2-d weights only (chosen by shape, never by name).
    grad_clip: float = 1.0  # Clip the global gradient norm to this; 0 disables.
    precision: str = "auto"  # The precision the run trains in (towers/precision.py); see the choices.
    local_loss: bool = False  # open_clip's local loss: each process's rows only, same gradients, less memory.
    seed: int = 0  # Seeds the initial weights and every process's sample stream.
    # Training shards in the LAION / img2dataset layout (brace pattern, '::' list or directory); left
    # out: the embedded toy set, generated on first use.
    train_data: str | None = None
    image_size: int | None = None  # Image side in pixels; left out: the tower variant's.
    # Text tokens per caption; left out: 32 on the toy set (TOY_CONTEXT_LENGTH: its captions fit with room
    # to spare) and CLIP's 77 on shards, where a shorter context would cut real captions.
    context_length: int | None = None
    # JPEG decode path of the train transform (launch/decoders.py); it changes pixels, so it is hashed.
    decoder: str = "pil"
    # How every text tower reads a caption: causal, or bidirectional inside the caption (towers/text_mask.py).
    text_mask: str = DEFAULT_TEXT_MASK
    # `constant`: warmup, the constant lr, then a linear cooldown to 0 over the last --cooldown-steps
    # (the scaling sweep's schedule: its checkpoints branch into every budget); `cosine` (open_clip's):
    # decay from the end of warmup to 0 at --steps.
    lr_schedule: str = "constant"
    # Linear cooldown steps at the end of a `constant` schedule; left out, it follows --steps:
    # 20% of them (COOLDOWN_FRACTION), at most what warmup leaves (0 under `cosine`); hashed resolved.
    cooldown_steps: int | None = None
    # The image tower's initial weights: library (its library's own) or original (CLIP's normal init for
    # the ViT, the Mixer paper's Flax init for the Mixer): runfolder/vocabulary.py.
    image_init: str = "library"
    # How the image tower pools its tokens: library (ViT class token, Mixer mean), avg, or map (one
    # learned query): runfolder/vocabulary.py.
    image_pool: str = "library"
    # The embedded toy set's seed (its images and where its held-out classes lie); shards ignore it.
    toy_seed: int = 0
    # The embedded toy set's task: standard, or hard (smaller targets among more distractors).
    toy_task: str = "standard"

    def __post_init__(self) -> None:
        if self.context_length is None:
            resolved = TOY_CONTEXT_LENGTH if self.train_data is None else CLIP_CONTEXT_LENGTH
            object.__setattr__(self, "context_length", resolved)
        if self.warmup_steps is None:
            room = max(self.steps - (self.cooldown_steps or 0), 0)
            object.__setattr__(self, "warmup_steps", min(round(WARMUP_FRACTION * self.steps), room))
        if self.cooldown_steps is None:
            cooldown = min(round(COOLDOWN_FRACTION * self.steps), max(self.steps - self.warmup_steps, 0)) \
                if self.lr_schedule == "constant" else 0
            object.__setattr__(self, "cooldown_steps", cooldown)

    def with_precision(self, device) -> tuple[Recipe, str, str | None]:
        """(this recipe with `precision` resolved for `device`, why, warning or None): `auto` becomes bf16
        or fp32 here, before anything is hashed or recorded."""
        resolved, why, warning = resolve_precision(self.precision, device)
        return dataclasses.replace(self, precision=resolved), why, warning

    def identity(self, processes: int, data: dict) -> dict:
        """What trained the model, at this scale: every field, the data by its identity (`data`, from
        launch.data.data_identity) instead of its path, and the global batch instead of its split
        into processes x batch_size x accum (every split trains the same model: the loss gathers the
        global batch)."""
        if self.precision == "auto":
            raise ValueError("Recipe.identity: resolve --precision auto first (Recipe.with_precision)")
        fields = dataclasses.asdict(self)
        global_batch = fields.pop("batch_size") * processes * fields.pop("accum")
        for name, default in HASHED_WHEN_SET.items():
            if fields[name] == default:
                del fields[name]
        toy = {name: fields.pop(name) for name in TOY_FIELDS}
        if self.train_data is None:  # the toy set is the data: its seed and task are part of its identity
            data = {**data, "toy_seed": toy["toy_seed"],
                    **({"toy_task": toy["toy_task"]} if toy["toy_task"] != TOY_FIELDS["toy_task"] else {})}
        return {**fields, "train_data": data, "global_batch_size": global_batch}

    def sha256(self, processes: int, data: dict) -> str:
        """sha256 of `identity(processes, data)` as canonical JSON."""
        canonical = json.dumps(self.identity(processes, data), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Experiment:
    """What is compared (the towers) and how it is trained (the recipe)."""

    image_tower: str = "mixer"
    text_tower: str = "mixer"
    variant: str = "w96"  # the default run's size (docs/toy-protocol.md); `tiny` is w128
    embed_dim: int | None = None  # None: the variant's
    # Mixer text tower only; None: the mode the recipe's text_mask selects (resolved on construction),
    # an explicit mode must read with that mask (ValueError otherwise)
    token_mixing: str | None = None
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_mixing", resolve_token_mixing(self.recipe.text_mask,
                                                                      self.token_mixing))

    def model_kwargs(self) -> dict:
        """Arguments of `towers.build_model` for this experiment."""
        return model_kwargs(self.image_tower, self.text_tower, self.variant, self.embed_dim,
                            text_mask=self.recipe.text_mask, token_mixing=self.token_mixing,
                            image_size=self.recipe.image_size, context_length=self.recipe.context_length,
                            image_init=self.recipe.image_init, image_pool=self.recipe.image_pool)


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; none of it changes the trained weights."""

    name: str | None = None  # The run folder's name; left out: `<model name>-seed<seed>`.
    runs_dir: str = "runs"  # Folder that holds the run folders.
    # Data loader worker processes per training process (decode and augment; 0: in the training process).
    workers: int = 1
    save_every: int = 0  # Write a checkpoint every N steps; 0: only at the end.
    eval_every: int = 0  # Zero-shot evaluation every N steps; 0: only at the end.
    eval_samples: int | None = None  # Limit each zero-shot eval to N images; left out: the whole val split.
    # ImageNet zero-shot at every eval (open_clip's flag): ILSVRC-layout or ImageNetV2 folder, or shards
    # with .cls; the toy val split is scored as well when training on toy.
    imagenet_val: str | None = None
    eval_templates: str = "openai"  # open_clip's ImageNet prompt templates: openai (80) or simple (7).
    log_every: int = 10  # Log loss, lr and throughput to metrics.jsonl and the trackers every N steps.
    # `latest`: continue from the checkpoint the run's `latest` names, or start the run when it has none
    # (open_clip's meaning); `auto` (requeues): the same, falling back past unreadable checkpoints to the
    # newest readable one; or a checkpoint path.
    resume: str | None = None
    keep_checkpoints: int = 3  # Keep the newest N step checkpoints; 0 keeps all.
    init_from: str | None = None  # Start from these weights only (ours, open_clip's or OpenAI's file).
    grad_checkpointing: bool = False  # Recompute activations in the backward pass: less memory, more compute.
    compile: bool = False  # torch.compile the model (inside DDP, so it still overlaps its all-reduce).
    # Torch threads per process on CPU; left out: this node's cores / its processes. `accelerate launch`
    # without --cpu or a config pins every process to 1 thread (OMP_NUM_THREADS=1, its GPU default),
    # which on a CPU-only machine would leave all but one core idle.
    cpu_threads: int | None = None
    # Zero-shot sets scored while training, comma-separated (toy, imagenet); left out: toy on the toy set,
    # imagenet with --imagenet-val.
    evals: str | None = None
    # Seconds a collective may wait before it fails, so a hung process ends the job instead of idling the
    # others: 600 s is over 3x the longest wait of a healthy B/32 job (a 1.8 GB checkpoint at 10 MB/s is
    # 180 s; resume and compile skew) and torch's NCCL default; a dead process ends the job sooner, through
    # the launcher and srun (launch/faults.py; docs/training-at-scale.md "Faults").
    collective_timeout: float = 600.0
    # Seconds without bytes before a shard read is abandoned and counted as `timeout` (sized for LAION on
    # object storage; 10x below the collective deadline, so a stall never ends the job).
    shard_read_timeout: float = 60.0
    # Train on CPU although GPUs were asked for (CUDA_VISIBLE_DEVICES, SLURM's --gpus*); without it such a
    # run exits 2 naming the driver and torch's CUDA instead of training every process on CPU.
    allow_cpu: bool = False
    # How DataLoader workers start; left out: fork on CPU (instant, nothing to inherit), forkserver on GPUs
    # (a worker forked after NCCL init inherits the CUDA context, NCCL's threads and IB registrations).
    loader_start_method: str | None = None
    # Experiment trackers (open_clip's flag): tensorboard, wandb (needs the [wandb] extra), all, or a comma
    # list such as tensorboard,wandb; metrics.jsonl is always written.
    report_to: str = "tensorboard"
    wandb_project: str = "mixclip-bench"  # The wandb project the run logs to.
    # Scaling-law cooldown branches: start from a `constant`-schedule checkpoint of another run (weights,
    # optimizer, data position, step) when this run's lr agrees with it at every earlier step.
    branch_from: str | None = None
    keep_steps: tuple[int, ...] = ()  # Also checkpoint at these steps and never prune them (branch points).


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_fields(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)  # the fields' comments
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        default = "" if f.default in (None, dataclasses.MISSING) else f" (default: {f.default})"
        kwargs: dict = dict(dest=f.name, default=argparse.SUPPRESS, help=helps.get(f.name, "") + default)
        args = typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            # the element type (`type(args[0])` was `type` itself: --betas parsed to the str class)
            kwargs.update(type=args[0], nargs="+" if args[-1] is Ellipsis else len(args))
        else:
            base = next((a for a in args if a is not type(None)), hint) \
                if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
            kwargs["type"] = base
        if f.name == "precision":  # open_clip's spellings too (parse_experiment maps them)
            kwargs.update(metavar="{" + ",".join(PRECISIONS) + "}", help=PRECISION_HELP + default)
        elif f.name in FIELD_CHOICES:
            kwargs["choices"] = FIELD_CHOICES[f.name]
        parser.add_argument(_flag(f.name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="launch/train.py", description="Train a CLIP tower pair with the one recipe "
        "(run it with `accelerate launch launch/train.py ...`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file of flag values (flags override it); the "
                        "committed recipes are launch/configs/*.yaml")
    parser.add_argument("--global-batch-size", dest="global_batch_size", type=int, default=argparse.SUPPRESS,
                        help="instead of --batch-size: split over this launch's processes (WORLD_SIZE) "
                        "and --accum")
    towers_group = parser.add_argument_group("towers (the only thing that differs between compared runs)")
    towers_group.add_argument("--tower", choices=sorted(FAMILIES), default=argparse.SUPPRESS,
                              help="family of both towers")
    towers_group.add_argument("--image-tower", dest="image_tower", choices=sorted(FAMILIES),
                              default=argparse.SUPPRESS, help="family of the image tower (overrides --tower)")
    towers_group.add_argument("--text-tower", dest="text_tower", choices=sorted(FAMILIES),
                              default=argparse.SUPPRESS, help="family of the text tower (overrides --tower)")
    towers_group.add_argument("--variant", default=argparse.SUPPRESS,
                              help="w96 (the default), w64-w256 (toy widths; tiny = w128), S/32, B/32, B/16")
    towers_group.add_argument("--embed-dim", dest="embed_dim", type=int, default=argparse.SUPPRESS,
                              help="width of the shared image-text embedding (default: the variant's)")
    towers_group.add_argument("--token-mixing", dest="token_mixing", choices=TOKEN_MIXING_MODES,
                              default=argparse.SUPPRESS,
                              help="Mixer text tower token mixing (default: the one --text-mask selects; "
                              "an explicit mode must read with --text-mask)")
    recipe = parser.add_argument_group("recipe")
    _add_fields(recipe, Recipe)
    recipe.add_argument("--decode-on-device", dest="decoder", action="store_const", const="device",
                        default=argparse.SUPPRESS, help="= --decoder device: workers ship JPEG bytes, the "
                        "training process decodes them on its device")
    _add_fields(parser.add_argument_group("run"), RunOptions)
    return parser


def _read_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    file = Path(path)
    if not file.is_file():
        parser.error(f"--config {path}: no such file")
    try:
        values = (yaml.safe_load if file.suffix in (".yaml", ".yml") else json.loads)(file.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        parser.error(f"--config {path}: not valid {file.suffix[1:]} ({str(error).splitlines()[0]})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values")
    return {key.replace("-", "_"): value for key, value in values.items()}


def parse_experiment(argv: list[str] | None = None) -> tuple[Experiment, RunOptions]:
    """Flags (over an optional --config file, over the defaults) -> (Experiment, RunOptions)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    config_file = args.pop("config", None)
    values = _read_config_file(config_file, parser) if config_file else {}
    # where each value came from, for errors that name what the user passed
    given = {**{name: f" (from --config {config_file})" for name in values}, **{name: "" for name in args}}
    # a flag overrides the config's batch, whichever of the two spellings either uses
    if "batch_size" in args:
        values.pop("global_batch_size", None)
    if "global_batch_size" in args:
        values.pop("batch_size", None)
    values.update(args)
    if "global_batch_size" in values:
        values["batch_size"] = _split_global_batch(parser, values.pop("global_batch_size"),
                                                   values.get("accum", Recipe.accum), values)
    try:  # open_clip_train's spellings of the same meaning
        if "precision" in values:
            values["precision"] = precision_value(str(values["precision"]))
        if "report_to" in values:
            tracker_names(str(values["report_to"]))
    except ValueError as error:
        parser.error(str(error))
    if "tower" in values:
        tower = values.pop("tower")
        values.setdefault("image_tower", tower)
        values.setdefault("text_tower", tower)
    known = {f.name for cls in (Recipe, RunOptions, Experiment) for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"--config: unknown field(s) {unknown}")
    recipe_values = {k: values.pop(k) for k in list(values) if k in Recipe.__dataclass_fields__}
    if "betas" in recipe_values:
        recipe_values["betas"] = tuple(recipe_values["betas"])
    run_values = {k: values.pop(k) for k in list(values) if k in RunOptions.__dataclass_fields__}
    if "keep_steps" in run_values:
        run_values["keep_steps"] = tuple(run_values["keep_steps"])
    try:
        experiment = Experiment(**values, recipe=Recipe(**recipe_values))
    except ValueError as error:  # a --token-mixing that reads with the other --text-mask
        parser.error(str(error))
    try:
        variant_table(experiment.image_tower, experiment.variant)
        variant_table(experiment.text_tower, experiment.variant)
    except ValueError as error:
        parser.error(f"--variant/--tower: {error}")
    experiment = dataclasses.replace(experiment, variant=canonical_variant(experiment.variant))
    _check_numbers(parser, experiment.recipe, RunOptions(**run_values))
    _check_schedule(parser, experiment.recipe, given)
    return experiment, RunOptions(**run_values)


def _split_global_batch(parser: argparse.ArgumentParser, global_batch: int, accum: int, values: dict) -> int:
    if "batch_size" in values:
        parser.error("--config: give batch_size or global_batch_size, not both")
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's, set in every launched process
    if global_batch < 1 or global_batch % (processes * accum):
        parser.error(f"--global-batch-size {global_batch}: not a positive multiple of {processes} "
                     f"process(es) x --accum {accum}")
    return global_batch // (processes * accum)


def _check_numbers(parser: argparse.ArgumentParser, recipe: Recipe, run: RunOptions) -> None:
    checks = [
        (recipe.steps > 0, "--steps must be > 0"),
        (recipe.batch_size > 0, "--batch-size must be > 0"),
        (recipe.accum > 0, "--accum must be > 0"),
        (recipe.lr > 0, "--lr must be > 0"),
        (0 <= recipe.warmup_steps, "--warmup-steps must be >= 0"),
        (recipe.cooldown_steps >= 0, "--cooldown-steps must be >= 0"),
        (recipe.toy_seed >= 0, "--toy-seed must be >= 0"),
        (recipe.train_data is None or (recipe.toy_seed, recipe.toy_task) == tuple(TOY_FIELDS.values()),
         "--toy-seed/--toy-task set the embedded toy set: leave them out with --train-data"),
        (run.workers >= 0, "--workers must be >= 0"),
        (run.keep_checkpoints >= 0, "--keep-checkpoints must be >= 0 (0 keeps all)"),
        (run.cpu_threads is None or run.cpu_threads > 0, "--cpu-threads must be > 0"),
        (run.collective_timeout > 0, "--collective-timeout must be > 0 (seconds)"),
        (run.shard_read_timeout > 0, "--shard-read-timeout must be > 0 (seconds)"),
    ]
    for name, choices in FIELD_CHOICES.items():  # a --config value bypasses argparse's choices
        value = getattr(recipe if name in Recipe.__dataclass_fields__ else run, name)
        checks.append((value is None or value in choices, f"{_flag(name)} must be one of {choices}"))
    for ok, message in checks:
        if not ok:
            parser.error(message)


def _check_schedule(parser: argparse.ArgumentParser, recipe: Recipe, given: dict[str, str]) -> None:
    """Warmup and cooldown must fit in --steps; a value left out follows --steps and always fits, so the
    one line names the value the user gave (on the command line or in --config)."""
    def named(name: str) -> str:
        return f"{_flag(name)} {getattr(recipe, name)}{given.get(name, '')}"

    steps = f"--steps {recipe.steps}{given.get('steps', '')}"
    if recipe.cooldown_steps and recipe.lr_schedule != "constant":
        parser.error(f"{named('cooldown_steps')} needs --lr-schedule constant (this run's is "
                     f"{recipe.lr_schedule})")
    for name in ("warmup_steps", "cooldown_steps"):
        if getattr(recipe, name) > recipe.steps:
            parser.error(f"{named(name)} is longer than {steps}: pass a smaller {_flag(name)}, or leave it "
                         "out and it follows --steps")
    if recipe.warmup_steps + recipe.cooldown_steps > recipe.steps:  # both given: neither follows --steps
        parser.error(f"{named('warmup_steps')} plus {named('cooldown_steps')} is longer than {steps}")


def experiment_dict(experiment: Experiment) -> dict:
    return dataclasses.asdict(experiment)


def experiment_identity(experiment: Experiment, processes: int, data: dict) -> dict:
    """The experiment with its recipe's identity at this scale (what resume and the report compare)."""
    return {**experiment_dict(experiment), "recipe": experiment.recipe.identity(processes, data)}


def with_legacy_text_mask(experiment: dict) -> dict:
    """A recorded experiment (or identity) dict with `recipe.text_mask` filled in where a run from before
    the text mask lacks it: the mask it trained with (Transformer causal, Mixer its token mixing's)."""
    recipe = experiment.get("recipe")
    if not isinstance(recipe, dict) or "text_mask" in recipe:
        return experiment
    family, token_mixing = str(experiment.get("text_tower")), experiment.get("token_mixing")
    mask, token_mixing = legacy_text_reading(family, token_mixing)
    return {**experiment, "token_mixing": token_mixing, "recipe": {**recipe, "text_mask": mask}}


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def experiment_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two experiment dicts."""
    names = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += experiment_differences(a, b, f"{prefix}{key}.")
        elif _plain(a) != _plain(b):
            names.append(f"{prefix}{key} ({a!r} vs {b!r})")
    return names
