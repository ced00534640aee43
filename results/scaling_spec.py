"""The scaling-law sweep specification (`results/scaling/sweep.yaml`) and the plan of runs it implies.

One YAML names the families, the seeds, the cooldown fraction and, per *target* (`toy` on this CPU,
`slurm` on a cluster, `plateau`: the default recipe's chain per tower), the sizes, the samples-seen
budgets, the global batch, the shared recipe flags, the learning-rate tuning, the branch-vs-fresh check
(optional: a target without one has no `check` phase) and the report it gets (`scaling`: the laws,
results.scaling_report; `plateau`: each chain's budgets and curve, results.plateau_report). Both
executors (`results.drivers.scaling_sweep`) run the plan this module derives, so the local sweep and
the SLURM array job cannot drift apart.

The plan, per (family, size, lr, seed) *chain* (docs/scaling-laws.md):
  trunk   constant lr (`--lr-schedule constant`) for the largest budget's pre-cooldown steps, keeping a
          checkpoint at every budget's branch point (`--keep-steps`);
  branch  one per budget N: `--steps N --cooldown-steps c --branch-from <trunk step N - c>`, c = the
          cooldown fraction of N (the lr agrees with a fresh run of budget N at every step, so the branch
          *is* that fresh run, at the trunk's cost);
  fresh   (the check only) the same budget trained from scratch, to compare with its branch.

Phases: `tune` (every lr value at the tuning size, all budgets, the tuning seeds), then each family's best lr
(lowest mean error at the largest budget) for `grid` (every size) and `check`. The tuning chain of
the chosen lr is the grid's chain at that size (same name, reused), so a one-value tuning at a grid size
and seed (the plateau target's fixed lr) trains nothing the grid does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runfolder import RunFolder
from runfolder.errors import InputError, ReportInputError
from runfolder.vocabulary import EVAL_PREFIX

DEFAULT_SPEC = Path(__file__).with_name("scaling") / "sweep.yaml"
PHASES = ("tune", "check", "grid")  # the check before the grid: both need only the tuned lr
LR_CHOICE = "lr_choice.json"  # in the sweep folder: each family's tuned lr and the tuning grid (the driver's)
REPORTS = ("scaling", "plateau")  # what a target's finished runs are read into (the key `report`)
# The fields a sweep varies; every other recipe field must be the same in all its runs (the report checks).
SWEPT_RECIPE_FIELDS = ("steps", "cooldown_steps", "lr", "seed")


class SpecError(InputError):
    """A sweep specification a user can fix; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Target:
    name: str
    sizes: list[str]
    budgets: list[int]  # samples seen
    global_batch: int
    seeds: list[int]
    cooldown_fraction: float
    recipe: dict[str, Any]  # train flags every run shares (field name -> value)
    run_options: dict[str, Any]
    tune_size: str
    tune_lrs: list[float]
    tune_seeds: list[int]
    check_size: str | None  # None: no branch-vs-fresh check (no `check` phase)
    check_budget: int | None
    metric: str
    onset_error: float | None = None  # the learning-onset rule: fit only points with error below it
    nodes: int = 1
    gpus_per_node: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)
    report: str = "scaling"

    def steps(self, budget: int) -> int:
        return budget // self.global_batch

    def cooldown(self, budget: int) -> int:
        return round(self.cooldown_fraction * self.steps(budget))

    def branch_point(self, budget: int) -> int:
        return self.steps(budget) - self.cooldown(budget)


@dataclass(frozen=True)
class PlannedRun:
    name: str
    kind: str  # trunk | branch | fresh
    flags: dict[str, Any]  # launch/train.py flags (field name -> value), --name and --runs-dir excluded
    family: str
    size: str
    lr: float
    seed: int
    budget: int | None = None  # samples seen (None: a trunk)
    trunk: str | None = None  # a branch's trunk run
    branch_step: int | None = None


def _need(mapping: dict, key: str, where: str, path: Path, kind: type | tuple = object) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise SpecError(f"{path}: missing key '{where}{key}'")
    value = mapping[key]
    if not isinstance(value, kind):
        raise SpecError(f"{path}: '{where}{key}' is {value!r}; expected {getattr(kind, '__name__', kind)}")
    return value


def load_spec(path: str | Path = DEFAULT_SPEC) -> dict:
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep specification") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: expected a mapping (families, seeds, targets, ...)")
    spec["_path"] = path
    return spec


def target(spec: dict, name: str) -> Target:
    """The spec's target `name`, checked: budgets divisible into whole steps, sizes and lrs present."""
    path = spec["_path"]
    targets = _need(spec, "targets", "", path, dict)
    if name not in targets:
        raise SpecError(f"{path}: no target '{name}' under 'targets' (have {sorted(targets)})")
    raw, where = targets[name], f"targets.{name}."
    tuning = _need(raw, "lr_tuning", where, path, dict)
    check = _need(raw, "branch_check", where, path, dict) if "branch_check" in raw else None
    result = Target(
        name=name, sizes=list(_need(raw, "sizes", where, path, list)),
        budgets=[int(b) for b in _need(raw, "budgets", where, path, list)],
        global_batch=int(_need(raw, "global_batch", where, path, int)),
        seeds=[int(s) for s in _need(raw, "seeds", where, path, list)],
        cooldown_fraction=float(_need(spec, "cooldown_fraction", "", path, (int, float))),
        recipe=dict(raw.get("recipe") or {}), run_options=dict(raw.get("run_options") or {}),
        tune_size=str(_need(tuning, "size", f"{where}lr_tuning.", path)),
        tune_lrs=[float(v) for v in _need(tuning, "values", f"{where}lr_tuning.", path, list)],
        tune_seeds=[int(s) for s in tuning.get("seeds", raw.get("seeds", []))],
        check_size=None if check is None else str(_need(check, "size", f"{where}branch_check.", path)),
        check_budget=None if check is None else int(_need(check, "budget", f"{where}branch_check.", path,
                                                           int)),
        metric=str(raw.get("metric", spec.get("metric", "toy_top1"))),
        onset_error=None if raw.get("onset_error") is None else float(raw["onset_error"]),
        nodes=int(raw.get("nodes", 1)), gpus_per_node=int(raw.get("gpus_per_node", 1)),
        slurm=dict(raw.get("slurm") or {}), report=str(raw.get("report", "scaling")))
    if result.report not in REPORTS:
        raise SpecError(f"{path}: '{where}report' is {result.report!r}; expected one of {REPORTS}")
    processes = result.nodes * result.gpus_per_node
    if result.recipe.get("batch_size", 0) * processes != result.global_batch:
        raise SpecError(f"{path}: '{where}recipe.batch_size' x {processes} processes must equal "
                        f"'{where}global_batch' ({result.global_batch})")
    checked = [] if check is None else [result.check_budget]
    for budget in result.budgets + checked:
        if budget % result.global_batch:
            raise SpecError(f"{path}: budget {budget} is not a whole number of global batches of "
                            f"{result.global_batch}")
    if check is not None and result.check_budget not in result.budgets:
        raise SpecError(f"{path}: '{where}branch_check.budget' {result.check_budget} is not one of the "
                        "budgets")
    for size in (result.tune_size, *([] if check is None else [result.check_size])):
        if size not in result.sizes:
            raise SpecError(f"{path}: size {size!r} in '{where}' is not one of its sizes {result.sizes}")
    if not result.tune_lrs or any(key in result.recipe for key in SWEPT_RECIPE_FIELDS):
        raise SpecError(f"{path}: '{where}recipe' may not set the swept fields {SWEPT_RECIPE_FIELDS}; "
                        "lr values go in lr_tuning.values")
    return result


def families(spec: dict) -> list[str]:
    return [str(f) for f in _need(spec, "families", "", spec["_path"], list)]


def run_stem(family: str, size: str, lr: float, seed: int) -> str:
    return f"{family}-{size.replace('/', '-')}-lr{lr:g}-seed{seed}"


def chain(t: Target, family: str, size: str, lr: float, seed: int, runs_dir: Path) -> list[PlannedRun]:
    """The trunk and its branches, one per budget, in the order they must run."""
    stem = run_stem(family, size, lr, seed)
    points = sorted({t.branch_point(b) for b in t.budgets})
    base = {**t.recipe, "tower": family, "variant": size, "lr": lr, "seed": seed,
            "lr_schedule": "constant", **t.run_options}
    trunk = PlannedRun(f"{stem}-trunk", "trunk",
                       {**base, "steps": points[-1], "cooldown_steps": 0, "keep_steps": points},
                       family, size, lr, seed)
    runs = [trunk]
    for budget in sorted(t.budgets):
        point = t.branch_point(budget)
        runs.append(PlannedRun(
            f"{stem}-n{budget}", "branch",
            {**base, "steps": t.steps(budget), "cooldown_steps": t.cooldown(budget),
             "branch_from": str(RunFolder(runs_dir / trunk.name).checkpoint(point))},
            family, size, lr, seed, budget, trunk.name, point))
    return runs


def fresh_run(t: Target, family: str, lr: float, seed: int) -> PlannedRun:
    stem = run_stem(family, t.check_size, lr, seed)
    flags = {**t.recipe, "tower": family, "variant": t.check_size, "lr": lr, "seed": seed,
             "lr_schedule": "constant", **t.run_options, "steps": t.steps(t.check_budget),
             "cooldown_steps": t.cooldown(t.check_budget)}
    return PlannedRun(f"{stem}-n{t.check_budget}-fresh", "fresh", flags, family, t.check_size, lr, seed,
                      t.check_budget)


def plan(spec: dict, t: Target, phase: str, runs_dir: Path,
         best_lr: dict[str, float] | None = None) -> list[list[PlannedRun]]:
    """The phase's chains (lists of runs in order). `grid` and `check` need each family's `best_lr`."""
    if phase not in PHASES:
        raise SpecError(f"unknown phase {phase!r}: expected one of {PHASES}")
    if phase == "tune":
        return [chain(t, f, t.tune_size, lr, s, runs_dir)
                for f in families(spec) for lr in t.tune_lrs for s in t.tune_seeds]
    if best_lr is None or set(best_lr) != set(families(spec)):
        raise SpecError(f"phase {phase} needs every family's tuned lr; run the tune phase first")
    if phase == "grid":
        # smallest size first, the families interleaved: a sweep cut short has both at the same points
        return [chain(t, f, size, best_lr[f], s, runs_dir)
                for size in t.sizes for s in t.seeds for f in families(spec)]
    if t.check_size is None:
        return []
    return [[fresh_run(t, f, best_lr[f], s)] for f in families(spec) for s in t.seeds]


def train_flags(flags: dict[str, Any]) -> list[str]:
    """launch/train.py arguments for a flag dict (lists become repeated values, booleans --x/--no-x)."""
    argv: list[str] = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def run_error(run_dir: Path, metric: str) -> float | None:
    """100 - the run's final `eval/<metric>` (an error in points), None while it has not finished."""
    final = RunFolder(run_dir).read_final_eval()
    if final is None:
        return None
    value = final.get(EVAL_PREFIX + metric)
    return None if value is None else 100.0 - float(value)


def read_lr_choice(out: Path) -> dict:
    """The sweep folder's lr_choice.json ({best_lr: {family: lr}, grid, ...}), written once tuning ends."""
    file = Path(out) / LR_CHOICE
    if not file.is_file():
        raise ReportInputError(f"{file}: missing; run `python -m results.drivers.scaling_sweep run` first")
    return json.loads(file.read_text())
