"""The equal-tuning grid as data: its cells, what each cell's runs measured, the choice rule, the headline
recipe each arm's choice makes, and the seeds a headline comparison needs (the power calculation).

Reads run folders only (`results.runs`: config.json, metrics.jsonl, final_eval.json), no model code.
Used by `python -m results.drivers.tuning`, which trains the grid and writes its tables; the rule is stated
there (its module docstring) and in docs/toy-protocol.md#equal-tuning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from results.runs import ReportInputError, Run, load_run
from results.significance import CONFIDENCE
from results.tables import seedless_sha256
from runfolder import RunFolder
from runfolder.vocabulary import TOY_TOP1_HELD_OUT, TOY_TOP1_SEEN, TOY_VAL_LOSS

TOWERS = ("transformer", "mixer")
# Spelled as the run folders are named (lr1e-3-warmup40); the default recipe's lr first, then outward
LRS = ("1e-3", "5e-4", "2e-3", "2.5e-4")
WARMUPS = (40, 160)
SELECTION_SEEDS = (0, 1)  # never a headline seed: the headline draws fresh ones (FIRST_FRESH_SEED on)
INIT_VARIANT = "original"  # runfolder.vocabulary.IMAGE_INITS: CLIP's normal init / the Mixer paper's
PRECISION = "bf16"  # the committed reference's precision on this CPU (AVX-512 bf16)
FIRST_FRESH_SEED = 23  # the headline seeds so far are 10-22 (results.drivers.reference.HEADLINE_SEEDS)
HALF_WIDTH = 3.0  # points: the 95% interval of the Mixer - Transformer difference the headline must reach
POOL_CONFIGS = 3  # an arm's seed sd is pooled over its 3 best configs: 3 degrees of freedom at 2 seeds
# 8 colours x 8 shapes (benchmarks.data.toy.CLASS_NAMES; results reads files only): chance is 1.6%
TOY_CLASSES = 64
CHANCE_TOP1 = 100.0 / TOY_CLASSES
DIVERGED_BELOW = 2 * CHANCE_TOP1  # seen top-1 at most twice chance: the run learned nothing
SEEN, HELD_OUT, VAL_LOSS = TOY_TOP1_SEEN, TOY_TOP1_HELD_OUT, TOY_VAL_LOSS  # final_eval.json keys
# the recipe fields the grid varies; everything else must be shared by every run of both arms
VARIED = ("seed", "lr", "warmup_steps", "image_init")


@dataclass(frozen=True)
class Cell:
    """One config of the grid: a tower at one lr, warmup and image init."""

    tower: str
    lr: str
    warmup: int
    init: str = "library"

    @property
    def folder(self) -> str:
        return f"lr{self.lr}-warmup{self.warmup}" + (f"-init-{self.init}" if self.init != "library" else "")

    @property
    def label(self) -> str:
        init = f", init {self.init}" if self.init != "library" else ""
        return f"lr {self.lr}, warmup {self.warmup}{init}"

    def train_flags(self) -> str:
        """launch/train.py flags of this config (the default recipe otherwise)."""
        init = f" --image-init {self.init}" if self.init != "library" else ""
        return f"--lr {self.lr} --warmup-steps {self.warmup} --precision {PRECISION}{init}"

    def run_dir(self, root: Path, seed: int) -> Path:
        """Where results.drivers.reference puts this config's run of `seed` under the tuning root."""
        return root / self.tower / self.folder / "runs" / f"{self.tower}-seed{seed}"


def stage1_cells(tower: str) -> list[Cell]:
    return [Cell(tower, lr, warmup) for lr in LRS for warmup in WARMUPS]


def stage2_cell(best: Cell) -> Cell:
    return Cell(best.tower, best.lr, best.warmup, INIT_VARIANT)


def finished(run_dir: Path) -> bool:
    return RunFolder(run_dir).final_eval.is_file()


@dataclass
class Measured:
    """What one config's finished runs measured, with the seeds still missing."""

    cell: Cell
    runs: list[Run] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    diverged: list[int] = field(default_factory=list)  # seeds whose run diverged (see is_diverged)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def eligible(self) -> bool:
        return self.complete and not self.diverged and bool(self.runs)

    def values(self, key: str) -> list[float]:
        return [_number(run.final_eval.get(key)) for run in self.runs]

    def mean(self, key: str) -> float:
        values = self.values(key)
        return float(np.mean(values)) if values else math.nan

    def variance(self) -> float:
        """Sample variance (n - 1) of seen top-1 over this config's seeds."""
        values = self.values(SEEN)
        return float(np.var(values, ddof=1)) if len(values) > 1 else math.nan


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def is_diverged(run: Run) -> bool:
    """Non-finite loss (the last logged training loss or the final val loss), no finite seen top-1, or a
    seen top-1 at most twice chance."""
    loss = run.train["loss"] if "loss" in run.train else []
    last_loss = float(loss.iloc[-1]) if len(loss) else math.nan
    seen = _number(run.final_eval.get(SEEN))
    return not (math.isfinite(last_loss) and math.isfinite(_number(run.final_eval.get(VAL_LOSS)))
                and math.isfinite(seen) and seen > DIVERGED_BELOW)


def measure(root: Path, cell: Cell, seeds: tuple[int, ...] = SELECTION_SEEDS) -> Measured:
    """Read a config's finished runs; a run without final_eval.json is missing (not started or running)."""
    measured = Measured(cell)
    for seed in seeds:
        run_dir = cell.run_dir(root, seed)
        if not finished(run_dir):
            measured.missing.append(seed)
            continue
        run = load_run(run_dir)
        recipe = run.recipe
        trained = (recipe.get("lr"), recipe.get("warmup_steps"), recipe.get("image_init", "library"))
        if trained != (float(cell.lr), cell.warmup, cell.init) or run.seed != seed:
            raise ReportInputError(f"{run_dir}/config.json: trained with lr {trained[0]}, warmup "
                                   f"{trained[1]}, image init {trained[2]}, seed {run.seed}; expected "
                                   f"{cell.label}, seed {seed} (the folder's name)")
        measured.runs.append(run)
        if is_diverged(run):
            measured.diverged.append(seed)
    return measured


def rank_key(measured: Measured) -> tuple:
    """Sort key, best first: seen top-1 mean at the tables' precision (0.1 point), then the lower val loss,
    the smaller lr, the longer warmup (the gentler recipe wins a tie)."""
    return (-round(measured.mean(SEEN), 1), measured.mean(VAL_LOSS), float(measured.cell.lr),
            -measured.cell.warmup)


def ranked(configs: list[Measured]) -> list[Measured]:
    """The eligible configs (every seed finished, none diverged), best first by the choice rule."""
    return sorted((m for m in configs if m.eligible), key=rank_key)


def best(configs: list[Measured]) -> Measured | None:
    order = ranked(configs)
    return order[0] if order else None


def pooled_sd(configs: list[Measured], top: int = POOL_CONFIGS) -> tuple[float, int, list[Cell]]:
    """(sd, degrees of freedom, the configs pooled): the within-config seed sd of seen top-1, pooled over
    the arm's `top` best eligible configs, each weighted by its n - 1."""
    pooled = ranked(configs)[:top]
    df = sum(len(m.runs) - 1 for m in pooled)
    if df == 0:
        return math.nan, 0, []
    variance = sum((len(m.runs) - 1) * m.variance() for m in pooled) / df
    return math.sqrt(variance), df, [m.cell for m in pooled]


def welch_half_width(sd_a: float, sd_b: float, n: int) -> float:
    """Half-width of the 95% Welch t interval of a difference of means, n seeds an arm, at these sds."""
    a, b = sd_a ** 2 / n, sd_b ** 2 / n
    df = (a + b) ** 2 / (a ** 2 / (n - 1) + b ** 2 / (n - 1))
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * math.sqrt(a + b)


def seeds_for_half_width(sd_a: float, sd_b: float, half_width: float = HALF_WIDTH,
                         limit: int = 10_000) -> int | None:
    """The fewest seeds an arm (n >= 2, the same for both) whose Welch interval is at most `half_width`
    either side, at these seed sds; None when the sds are unknown or `limit` seeds do not reach it."""
    if not (math.isfinite(sd_a) and math.isfinite(sd_b)):
        return None
    if sd_a == sd_b == 0:
        return 2
    if welch_half_width(sd_a, sd_b, limit) > half_width:
        return None
    low, high = 2, limit  # the half-width falls with n: bisect for the first n that reaches it
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if welch_half_width(sd_a, sd_b, middle) > half_width else (low, middle)
    return low


def headline_recipe(chosen: dict[str, Measured]) -> dict[str, Any]:
    """Each arm's recipe as its chosen config's runs recorded it (config.json: experiment, recipe_identity,
    recipe_sha256), split into the fields both arms share and each arm's own."""
    identities = {tower: m.runs[0].recipe for tower, m in chosen.items()}  # recipe_identity where recorded
    fields = sorted({key for identity in identities.values() for key in identity} - {"seed"})
    missing = object()
    shared, own = {}, {tower: {} for tower in chosen}
    for key in fields:
        values = {tower: identity.get(key, missing) for tower, identity in identities.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) == 1:
            shared[key] = next(iter(values.values()))
        else:
            for tower, value in values.items():
                own[tower][key] = None if value is missing else value
    arms = {}
    for tower, m in chosen.items():
        experiment = m.runs[0].config["experiment"]
        arms[tower] = {
            "config": m.cell.label, "train_flags": m.cell.train_flags(), "recipe_fields": own[tower],
            "towers": {key: experiment.get(key)
                       for key in ("image_tower", "text_tower", "variant", "token_mixing")},
            "recipe_sha256_by_seed": {str(run.seed): run.recipe_sha256 for run in m.runs},
            "recipe_sha256_without_seed": seedless_sha256(identities[tower]),
        }
    return {"shared": shared, "arms": arms}
