"""The training recipe and the experiment: frozen dataclasses, their CLI flags and their hash.

`Recipe` holds every number that trains a model; `Experiment` = towers + recipe. The tower choice never
touches the recipe: `--tower mixer` and `--tower transformer` with the same other flags give the same
`recipe_sha256` (the sha256 of the Recipe's canonical JSON, with the data by identity and the global
batch: `Recipe.identity`), and nothing in `launch/` branches on the tower family. Flags are the
fields' names in kebab case (`--warmup-steps`); `--config FILE.yaml|json` supplies values that flags
then override.

    from launch.config import parse_experiment
    experiment, run = parse_experiment(["--tower", "mixer", "--steps", "100"])
    experiment.recipe.sha256(processes=1, data={"toy_seed": 0, "toy_version": 3})
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from towers.registry import FAMILIES, canonical_variant, variant_table
from towers.token_mixing import DEFAULT_TOKEN_MIXING, TOKEN_MIXING_MODES

PRECISIONS = ("fp32", "bf16", "fp16")
EVAL_TEMPLATES = ("openai", "simple")  # benchmarks.zeroshot_classifier.TEMPLATE_SETS
TOY_CONTEXT_LENGTH = 32
CLIP_CONTEXT_LENGTH = 77


@dataclass(frozen=True)
class Recipe:
    """Every number that trains a model. The defaults were tuned once on `toy`, for all towers alike."""

    steps: int = 750  # optimizer steps; sized so the default run fits 10 minutes on a 2-core CPU
    batch_size: int = 128  # per process; global batch = batch_size x processes x accum
    accum: int = 1  # micro-batches per step; the contrastive loss still sees the whole batch
    lr: float = 1e-3
    warmup_steps: int = 40  # linear warmup, then cosine decay to 0 at `steps`
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.2  # on >= 2-d weights only (chosen by shape, never by name)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    # bf16 autocast (fp32 weights, optimizer state and loss), as CLIP is trained on GPUs; on a CPU
    # without bf16 instructions pass --precision fp32 (docs/design.md: speed and accuracy of both).
    precision: str = "bf16"
    local_loss: bool = False  # open_clip's local_loss: same gradients, less memory
    seed: int = 0
    train_data: str | None = None  # shards (brace pattern, '::' list or directory); None: the toy set
    image_size: int | None = None  # None: the tower variant's size
    # None: resolved on construction to TOY_CONTEXT_LENGTH on the toy set (its captions and prompts
    # fit with room to spare, so nothing is cut) and to CLIP's 77 on shards, where a shorter context
    # would cut real captions (docs/design.md: why 32 and not 16).
    context_length: int | None = None

    def __post_init__(self) -> None:
        if self.context_length is None:
            resolved = TOY_CONTEXT_LENGTH if self.train_data is None else CLIP_CONTEXT_LENGTH
            object.__setattr__(self, "context_length", resolved)

    def identity(self, processes: int, data: dict) -> dict:
        """What trained the model, at this scale: every field, the data by its identity (`data`, from
        launch.data.data_identity) instead of its path, and the global batch instead of its split
        into processes x batch_size x accum (every split trains the same model: the loss gathers the
        global batch)."""
        fields = dataclasses.asdict(self)
        global_batch = fields.pop("batch_size") * processes * fields.pop("accum")
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
    variant: str = "tiny"
    embed_dim: int | None = None  # None: the variant's
    token_mixing: str = DEFAULT_TOKEN_MIXING  # Mixer text tower only
    recipe: Recipe = field(default_factory=Recipe)

    def model_kwargs(self) -> dict:
        """Arguments of `towers.build_model` for this experiment."""
        image_overrides = {"image_size": self.recipe.image_size} if self.recipe.image_size else {}
        text_overrides = {"token_mixing": self.token_mixing} if self.text_tower == "mixer" else {}
        if self.recipe.context_length != 77:
            text_overrides["context_length"] = self.recipe.context_length
        return dict(image_family=self.image_tower, text_family=self.text_tower, variant=self.variant,
                    embed_dim=self.embed_dim, image_overrides=image_overrides, text_overrides=text_overrides)


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; none of it changes the trained weights."""

    name: str | None = None
    runs_dir: str = "runs"
    workers: int = 1
    save_every: int = 0  # 0: only at the end
    eval_every: int = 0  # 0: only at the end
    eval_samples: int | None = None  # limit each zero-shot eval (None: the whole val split)
    # ImageNet zero-shot at every eval (open_clip's flag): ILSVRC-layout or ImageNetV2 folder, or shards
    # with .cls; the toy val split is scored as well when training on toy
    imagenet_val: str | None = None
    eval_templates: str = "openai"  # open_clip's ImageNet template set: openai (80) or simple (7)
    log_every: int = 10
    # "latest", a checkpoint path, or "auto" (the requeue mode: the newest readable checkpoint if any,
    # else start the run)
    resume: str | None = None
    keep_checkpoints: int = 3  # the newest N step checkpoints are kept; 0 keeps all
    init_from: str | None = None  # weights only (ours, open_clip's or OpenAI's)
    grad_checkpointing: bool = False
    compile: bool = False
    # Torch threads per process on CPU; None: this node's cores / its processes. `accelerate launch`
    # without --cpu or a config pins every process to 1 thread (OMP_NUM_THREADS=1, its GPU default),
    # which on a CPU-only machine would leave all but one core idle.
    cpu_threads: int | None = None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_fields(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        kwargs: dict = dict(dest=f.name, default=argparse.SUPPRESS,
                            help=f"(default: {f.default if f.default is not dataclasses.MISSING else ''})")
        args = typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=type(args[0]), nargs=len(args))
        else:
            base = next((a for a in args if a is not type(None)), hint) \
                if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
            kwargs["type"] = base
        if f.name == "precision":
            kwargs["choices"] = PRECISIONS
        if f.name == "eval_templates":
            kwargs["choices"] = EVAL_TEMPLATES
        if f.name == "context_length":
            kwargs["help"] = (f"(default: {TOY_CONTEXT_LENGTH} on the toy set, {CLIP_CONTEXT_LENGTH} with "
                              "--train-data)")
        parser.add_argument(_flag(f.name), **kwargs)


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end the program with exit status 2 and one line, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="launch/train.py", description="Train a CLIP tower pair with the one recipe "
        "(run it with `accelerate launch launch/train.py ...`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file of flag values (flags override it)")
    towers_group = parser.add_argument_group("towers (the only thing that differs between compared runs)")
    towers_group.add_argument("--tower", choices=sorted(FAMILIES), default=argparse.SUPPRESS,
                              help="family of both towers")
    towers_group.add_argument("--image-tower", dest="image_tower", choices=sorted(FAMILIES),
                              default=argparse.SUPPRESS)
    towers_group.add_argument("--text-tower", dest="text_tower", choices=sorted(FAMILIES),
                              default=argparse.SUPPRESS)
    towers_group.add_argument("--variant", default=argparse.SUPPRESS, help="tiny, S/32, B/32, B/16")
    towers_group.add_argument("--embed-dim", dest="embed_dim", type=int, default=argparse.SUPPRESS)
    towers_group.add_argument("--token-mixing", dest="token_mixing", choices=TOKEN_MIXING_MODES,
                              default=argparse.SUPPRESS, help="Mixer text tower token mixing")
    _add_fields(parser.add_argument_group("recipe"), Recipe)
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
    values = _read_config_file(args.pop("config"), parser) if args.get("config") else {}
    args.pop("config", None)
    values.update(args)
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
    experiment = Experiment(**values, recipe=Recipe(**recipe_values))
    try:
        variant_table(experiment.image_tower, experiment.variant)
        variant_table(experiment.text_tower, experiment.variant)
    except ValueError as error:
        parser.error(f"--variant/--tower: {error}")
    experiment = dataclasses.replace(experiment, variant=canonical_variant(experiment.variant))
    _check_numbers(parser, experiment.recipe, RunOptions(**run_values))
    return experiment, RunOptions(**run_values)


def _check_numbers(parser: argparse.ArgumentParser, recipe: Recipe, run: RunOptions) -> None:
    checks = [
        (recipe.steps > 0, "--steps must be > 0"),
        (recipe.batch_size > 0, "--batch-size must be > 0"),
        (recipe.accum > 0, "--accum must be > 0"),
        (recipe.lr > 0, "--lr must be > 0"),
        (0 <= recipe.warmup_steps, "--warmup-steps must be >= 0"),
        (recipe.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}"),
        (run.workers >= 0, "--workers must be >= 0"),
        (run.keep_checkpoints >= 0, "--keep-checkpoints must be >= 0 (0 keeps all)"),
        (run.cpu_threads is None or run.cpu_threads > 0, "--cpu-threads must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)


def experiment_dict(experiment: Experiment) -> dict:
    return dataclasses.asdict(experiment)


def experiment_identity(experiment: Experiment, processes: int, data: dict) -> dict:
    """The experiment with its recipe's identity at this scale (what resume and the report compare)."""
    return {**experiment_dict(experiment), "recipe": experiment.recipe.identity(processes, data)}


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
