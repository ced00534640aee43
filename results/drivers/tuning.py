"""The equal-tuning grid: both towers get the same search on selection seeds, each arm's best becomes its
headline recipe, and the tuning seeds' spread says how many fresh seeds the headline comparison needs.

    python -m results.drivers.tuning  # train what is missing (stage 1, then stage 2), write tables
    python -m results.drivers.tuning --dry-run  # the plan: the runs it would train and the runs it reuses
    python -m results.drivers.tuning --report-only      # tables from the runs there; names the missing cells
    python -m results.drivers.tuning --towers mixer --out /tmp/tuning --extra-train-flags "--cpu-threads 1"

Stage 1: each arm (one tower family for image and text) trains lr in {2.5e-4, 5e-4, 1e-3, 2e-3} x warmup
in {40, 160} steps on the selection seeds 0 and 1, the default recipe otherwise at --precision bf16, into
`<out>/<tower>/lr<lr>-warmup<w>/runs/<tower>-seed<k>/` through `results.drivers.reference` (its training
command; a run with final_eval.json is reused, so the command resumes). Stage 2: the image tower's
other init (`--image-init original`: CLIP's normal init for the ViT, the Mixer paper's for the Mixer)
at each arm's stage-1 best, the same seeds, into `<out>/<tower>/lr<lr>-warmup<w>-init-original/`.

Choice rule, fixed before any headline run. Each arm's headline recipe is the config with the highest
mean seen-class top-1 (final_eval.json `toy_top1_seen`) over its selection seeds, among its stage-1
configs and its stage-2 init variant. Only a config whose every seed finished counts. A config with a
diverged run (a non-finite training or validation loss, or a seen top-1 at most twice chance, 3.1%) is
not eligible: a recipe that fails one seed in two would lose headline seeds; its numbers are still
tabled. Means equal at the tables' precision (0.1 point) are a tie, won by the lower mean validation
loss, then the smaller lr, then the longer warmup. Stage 2 runs at the stage-1 best by the same rule.

Headline seeds: each arm's seed sd of seen top-1 is pooled within configs over its 3 best eligible
configs (2 seeds each: 3 degrees of freedom); the headline runs the fewest fresh seeds an arm (23 on)
for which the 95% Welch t interval of the Mixer - Transformer difference at those sds is at most +-3
points. Writes `<out>/tuning.md` and `<out>/tuning.json` (docs/toy-protocol.md#equal-tuning).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from results.drivers import reference
from results.drivers.tuning_grid import (
    FIRST_FRESH_SEED,
    HALF_WIDTH,
    HELD_OUT,
    POOL_CONFIGS,
    SEEN,
    SELECTION_SEEDS,
    TOWERS,
    VAL_LOSS,
    Cell,
    Measured,
    best,
    finished,
    headline_recipe,
    measure,
    pooled_sd,
    seeds_for_half_width,
    stage1_cells,
    stage2_cell,
    welch_half_width,
)
from results.runs import ReportInputError
from runfolder import atomic_write_text
from runfolder.code_version import ALLOW_DIRTY_HELP, require_clean_tree
from runfolder.errors import OneLineParser, run_main

NAMES = {"transformer": "Transformer", "mixer": "Mixer"}
HEADLINE_OUT = "results/reference_tuned"


def read_grid(root: Path, towers: list[str]) -> dict[str, list[Measured]]:
    """Each arm's configs as measured so far: the stage-1 grid, then stage 2 once stage 1 is complete."""
    grid = {}
    for tower in towers:
        configs = [measure(root, cell) for cell in stage1_cells(tower)]
        stage1_best = best(configs) if all(m.complete for m in configs) else None
        if stage1_best is not None:
            configs.append(measure(root, stage2_cell(stage1_best.cell)))
        grid[tower] = configs
    return grid


def plan(root: Path, towers: list[str]) -> tuple[list[tuple[Cell, int]], list[tuple[Cell, int]], list[str]]:
    """(runs to train, runs reused, stages that wait): stage 1 interleaved across arms (a grid cut short
    leaves both arms measured at the same configs), then stage 2 where an arm's stage 1 is complete."""
    train, reused, waiting = [], [], []
    cells = {tower: stage1_cells(tower) for tower in towers}
    for index in range(len(cells[towers[0]])):
        for seed in SELECTION_SEEDS:
            for tower in towers:
                cell = cells[tower][index]
                (reused if finished(cell.run_dir(root, seed)) else train).append((cell, seed))
    grid = read_grid(root, towers)
    for tower in towers:
        stage1 = [m for m in grid[tower] if m.cell.init == "library"]
        if len(stage1) == len(grid[tower]):
            left = sum(len(m.missing) for m in stage1)
            waiting.append(f"stage 2 of {tower}: after its stage 1 ({left} runs to go)" if left else
                           f"stage 2 of {tower}: no eligible stage-1 config (every one diverged)")
            continue
        stage2 = grid[tower][-1]
        for seed in SELECTION_SEEDS:
            (train if seed in stage2.missing else reused).append((stage2.cell, seed))
    return train, reused, waiting


def train_cell(root: Path, cell: Cell, seeds: list[int], extra_flags: str, allow_dirty: bool) -> None:
    """Train `seeds` of one config with results.drivers.reference's command (its run layout)."""
    flags = f"{cell.train_flags()} {extra_flags}".strip()
    reference.main(["--out", str(root / cell.tower / cell.folder), "--towers", cell.tower,
                    "--seeds", *map(str, seeds), "--train-flags", flags,
                    "--skip-sts", "--skip-word-order", "--skip-throughput", "--no-report",
                    *(["--allow-dirty"] if allow_dirty else [])])


def _config_row(m: Measured, chosen: bool) -> dict[str, Any]:
    return {"config": m.cell.label, "folder": m.cell.folder, "lr": m.cell.lr, "warmup_steps": m.cell.warmup,
            "image_init": m.cell.init, "seeds": [run.seed for run in m.runs], "missing_seeds": m.missing,
            "diverged_seeds": m.diverged, "eligible": m.eligible, "chosen": chosen,
            "top1_seen_mean": m.mean(SEEN), "top1_seen_by_seed": m.values(SEEN),
            "top1_held_out_mean": m.mean(HELD_OUT), "val_loss_mean": m.mean(VAL_LOSS)}


def summarize(root: Path, towers: list[str], headline_out: str = HEADLINE_OUT) -> dict[str, Any]:
    """Everything tuning.md and tuning.json say, from the runs under `root`."""
    grid = read_grid(root, towers)
    missing = [{"tower": m.cell.tower, "config": m.cell.label, "folder": m.cell.folder, "seeds": m.missing}
               for configs in grid.values() for m in configs if m.missing]
    summary: dict[str, Any] = {"root": str(root), "selection_seeds": list(SELECTION_SEEDS),
                               "missing": missing, "arms": {}, "headline_recipe": None, "power": None,
                               "headline_commands": []}
    chosen: dict[str, Measured] = {}
    for tower, configs in grid.items():
        stage1 = [m for m in configs if m.cell.init == "library"]
        complete = len(configs) > len(stage1) and configs[-1].complete
        choice = best(configs)
        stage1_best = best(stage1) if all(m.complete for m in stage1) else None
        if complete and choice is not None:
            chosen[tower] = choice
        sd, df, pooled = pooled_sd(configs)
        summary["arms"][tower] = {
            "complete": complete, "chosen": choice.cell.label if choice else None,
            "chosen_is_final": complete,
            "stage1_best": stage1_best.cell.label if stage1_best else None,
            "seed_sd": sd, "seed_sd_df": df, "seed_sd_pooled_over": [cell.label for cell in pooled],
            "configs": [_config_row(m, m is choice) for m in configs]}
    summary["complete"] = not missing and len(chosen) == len(towers)
    if len(chosen) == 2:
        summary["headline_recipe"] = headline_recipe(chosen)
    arms = summary["arms"]
    if len(towers) == 2 and all(math.isfinite(arms[t]["seed_sd"]) for t in towers):
        sds = [arms[t]["seed_sd"] for t in towers]
        n = seeds_for_half_width(*sds)
        summary["power"] = {"half_width_target": HALF_WIDTH, "seeds_per_arm": n,
                            "half_width_at_n": welch_half_width(*sds, n) if n else None,
                            "fresh_seeds": list(range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + n)) if n else None,
                            "pooled_configs": POOL_CONFIGS}
        if len(chosen) == 2 and n:
            summary["headline_commands"] = headline_commands(chosen, n, headline_out)
    return summary


def headline_commands(chosen: dict[str, Measured], n: int, out: str) -> list[str]:
    seeds = [str(seed) for seed in range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + n)]
    commands = [shlex.join(["python", "-m", "results.drivers.reference", "--towers", tower, "--seeds", *seeds,
                            "--out", out, "--train-flags", m.cell.train_flags(), "--no-report"])
                for tower, m in chosen.items()]
    # each arm at its own tuned recipe: the report groups runs by tower pair and states each arm's recipe;
    # the arms by name, the Transformer first (the baseline): the cnn calibration arm shares the folder
    runs = " ".join(f"{out}/runs/{tower}-seed*" for tower in chosen)
    return commands + [f"python -m results.report {runs} --scores {out}/scores --out {out}/report "
                       "--recipe-per-arm --primary toy_top1_seen"]


def _seen_cell(row: dict[str, Any], stage2: bool) -> str:
    if not row["seeds"]:
        return "missing (seeds " + ", ".join(map(str, row["missing_seeds"])) + ")"
    mean = f"{row['top1_seen_mean']:.1f}"
    seeds = ", ".join(f"{value:.1f}" for value in row["top1_seen_by_seed"])
    text = (f"**{mean}**" if row["chosen"] else mean) + f" ({seeds})"
    if row["missing_seeds"]:
        text += ", missing seed " + ", ".join(map(str, row["missing_seeds"]))
    if row["diverged_seeds"]:
        text += ", diverged: seed " + ", ".join(map(str, row["diverged_seeds"]))
    return (f"[lr {row['lr']}, warmup {row['warmup_steps']}] " if stage2 else "") + text


def _cells(row: dict[str, Any] | None, stage2: bool = False) -> str:
    """One arm's three table cells for one config: seen top-1, held-out top-1, val loss."""
    if row is None:
        return "not yet | – | –"
    numbers = [f"{row[key]:.{digits}f}" if row["seeds"] and math.isfinite(row[key]) else "–"
               for key, digits in (("top1_held_out_mean", 1), ("val_loss_mean", 3))]
    return " | ".join([_seen_cell(row, stage2), *numbers])


def choice_rule() -> str:
    """The choice rule as the module docstring states it, on one line."""
    return " ".join(__doc__.split("Choice rule, fixed before any headline run. ")[1].split("\n\n")[0].split())


def _recipe_rows(arms: dict[str, Any], towers: list[str]) -> list[str]:
    shown = {
        "launch/train.py flags": lambda a: f"`{a['train_flags']}`",
        "own recipe fields": lambda a: ", ".join(f"{k}={'(default)' if v is None else v}"
                                                 for k, v in a["recipe_fields"].items()),
        "towers": lambda a: ", ".join(f"{k}={v}" for k, v in a["towers"].items()),
        "recipe_sha256 by seed": lambda a: "<br>".join(f"seed {seed}: `{sha}`"
                                                       for seed, sha in a["recipe_sha256_by_seed"].items()),
        "recipe sha256 without the seed": lambda a: f"`{a['recipe_sha256_without_seed']}`",
    }
    return [f"| {label} | " + " | ".join(get(arms[t]) for t in towers) + " |" for label, get in shown.items()]


def markdown(summary: dict[str, Any]) -> str:
    towers = list(summary["arms"])
    names = [NAMES.get(t, t) for t in towers]
    arms = summary["arms"]
    lines = ["# Equal tuning: " + " vs ".join(names), ""]
    if summary["missing"]:
        gaps = "; ".join(f"{m['tower']} {m['config']} (seed {', '.join(map(str, m['seeds']))})"
                         for m in summary["missing"])
        lines += [f"**Partial grid**: missing {gaps}. Choices below are provisional until every cell has "
                  "finished.", ""]
    waiting = [t for t in towers if len(arms[t]["configs"]) == len(stage1_cells(t))]
    if waiting:
        lines += ["Stage 2 (init original) has not started for: " + ", ".join(waiting)
                  + " (it runs at the arm's stage-1 best once that arm's stage 1 is complete).", ""]
    lines += ["## Choice rule", "", choice_rule(), ""]
    header = " | ".join(f"{n} seen top-1 | {n} held-out | {n} val loss" for n in names)
    lines += ["## Seen-class top-1 by config (mean over the selection seeds; each seed in brackets)", "",
              f"| config | {header} |", "|---|" + "---:|---:|---:|" * len(towers)]
    rows = {t: arms[t]["configs"] for t in towers}
    for index, first in enumerate(rows[towers[0]][:len(stage1_cells(towers[0]))]):
        label = f"lr {first['lr']}, warmup {first['warmup_steps']}"
        lines.append(f"| {label} | " + " | ".join(_cells(rows[t][index]) for t in towers) + " |")
    stage2 = [rows[t][-1] if len(rows[t]) > len(stage1_cells(t)) else None for t in towers]
    lines.append("| init original, at the stage-1 best | " + " | ".join(_cells(r, True) for r in stage2)
                 + " |")
    lines += ["", "## Each arm's headline recipe", "", "| | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(towers),
              "| chosen config | " + " | ".join(str(arms[t]["chosen"] or "–") for t in towers) + " |"]
    recipe = summary["headline_recipe"]
    if recipe:
        lines += _recipe_rows(recipe["arms"], towers)
        shared = ", ".join(f"{k}={json.dumps(v)}" for k, v in recipe["shared"].items())
        lines += ["", "Shared by both arms (each chosen run's config.json `recipe_identity`, the seed "
                  f"aside): {shared}."]
    lines += ["", "## Headline seeds", ""]
    for t, name in zip(towers, names, strict=True):
        if not arms[t]["seed_sd_df"]:
            lines.append(f"- {name}: no seed sd yet (it needs a finished, eligible config).")
            continue
        pooled = "; ".join(arms[t]["seed_sd_pooled_over"])
        lines.append(f"- {name}: seed sd of seen top-1 {arms[t]['seed_sd']:.2f} points, pooled within "
                     f"configs over {pooled} ({arms[t]['seed_sd_df']} df).")
    power = summary["power"]
    if power and power["seeds_per_arm"]:
        seeds = power["fresh_seeds"]
        lines += ["", f"**{power['seeds_per_arm']} fresh seeds an arm** (seeds {seeds[0]}-{seeds[-1]}) "
                  "give a 95% Welch interval of the Mixer - Transformer difference of "
                  f"+-{power['half_width_at_n']:.2f} points at these sds "
                  f"(target +-{power['half_width_target']:g})."]
    else:
        lines += ["", "No power calculation yet: it needs both arms' seed sds."]
    if summary["headline_commands"]:
        lines += ["", "## Headline commands", "", "```", *summary["headline_commands"], "```"]
    return "\n".join(lines) + "\n"


def _strict(value: Any) -> Any:
    """NaN (a mean over no runs) -> null: tuning.json is strict JSON."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    text = json.dumps(_strict(summary), indent=2, allow_nan=False) + "\n"
    return (atomic_write_text(out / "tuning.json", text),
            atomic_write_text(out / "tuning.md", markdown(summary)))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m results.drivers.tuning", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/tuning"), help="the grid's folder")
    parser.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS), help="arms to tune")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan (runs to train, runs reused)")
    mode.add_argument("--report-only", action="store_true", help="write the tables from the runs there")
    parser.add_argument("--extra-train-flags", default="",
                        help="run options for every run, not recipe fields, e.g. \"--cpu-threads 1\"")
    parser.add_argument("--headline-out", default=HEADLINE_OUT, help="--out of the printed headline commands")
    parser.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    args = parser.parse_args(argv)
    towers = [t for t in TOWERS if t in args.towers]
    try:
        if args.dry_run:
            to_train, reused, waiting = plan(args.out, towers)
            for verb, runs in (("train", to_train), ("reuse", reused)):
                for cell, seed in runs:
                    print(f"{verb} {cell.run_dir(args.out, seed)}")
            for line in waiting:
                print(f"wait  {line}")
            print(f"{len(to_train)} runs to train, {len(reused)} reused")
            return 0
        if not args.report_only:
            require_clean_tree(args.allow_dirty)
            for stage in (1, 2):
                to_train, _, _ = plan(args.out, towers)
                by_cell: dict[Cell, list[int]] = {}
                for cell, seed in to_train:
                    if (cell.init == "library") == (stage == 1):
                        by_cell.setdefault(cell, []).append(seed)
                for cell, seeds in by_cell.items():
                    train_cell(args.out, cell, seeds, args.extra_train_flags, args.allow_dirty)
        summary = summarize(args.out, towers, args.headline_out)
    except ReportInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in write(summary, args.out):
        print(f"wrote {path}")
    for line in summary["headline_commands"]:
        print(line)
    return 0


if __name__ == "__main__":
    run_main(main)
