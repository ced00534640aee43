"""The toy's controls in one command: is the Mixer-Transformer ranking the pooling's or the task's doing?

    python -m results.drivers.controls --dry-run          # the plan: each run it would train or reuse
    python -m results.drivers.controls                    # train what is missing, then write the reports
    python -m results.drivers.controls --only pooling     # one group (pooling, variants, calibration)
    python -m results.drivers.controls --report-only      # the reports from the runs there
    python -m results.drivers.controls --recipe transformer="--lr 1e-3 --warmup-steps 160 --precision bf16" \
        --recipe mixer="--lr 2e-3 --warmup-steps 40 --precision bf16" --extra-train-flags "--cpu-threads 1"

Each arm's headline recipe is read from `--tuning` (results/tuning/tuning.json: `headline_recipe`, the
flags of each arm's chosen config); it must be complete, unless `--recipe TOWER=FLAGS` gives both arms.
Groups, each run through `results.drivers.reference` (its training command and run layout; a run with
final_eval.json is reused, so the command resumes), in this order:
- pooling -> `<out>/pooling/runs/`: `transformer-avgpool-seed{0,1}` (the ViT's headline recipe with
  `--image-pool avg`) and `mixer-mappool-seed{0,1}` (the Mixer's with `--image-pool map`), on the
  selection seeds. Their baselines are the tuning grid's runs of the chosen config on those seeds, read
  from `<tuning folder>/<tower>/<config>/runs/`, not retrained. Report: `<out>/pooling/report.md`, `.json`.
- variants -> `<out>/toy_variants/{hard,toy_seed1}/runs/`: both arms at their headline recipes with
  `--toy-task hard` (a smaller target among more, larger distractors) or `--toy-seed 1` (another toy set:
  another held-out square), seeds `--variant-seeds`. Each gets a `results.report` report
  (`--recipe-per-arm --primary toy_top1_seen`); `<out>/toy_variants/summary.md` sets them beside the
  standard task's headline (`<out>/reference_tuned/`, where present).
- calibration -> `<out>/reference_tuned/runs/cnn-seed<k>`: the cnn family (timm ResNet image tower, CLIP
  text Transformer) at the default recipe with `--precision bf16`, a third arm beside the headline; its
  three-arm report goes to `<out>/reference_tuned/calibration/` (the headline report stays two-armed).
The endpoint is the toy seen-class top-1 (final_eval.json `toy_top1_seen`): no run is scored on STS,
word order or throughput. docs/toy-protocol.md has the protocol and the results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results import controls_report
from results.drivers import reference
from results.drivers.tuning_grid import FIRST_FRESH_SEED, SELECTION_SEEDS, Cell
from results.report import write_report
from runfolder.code_version import ALLOW_DIRTY_HELP, require_clean_tree
from runfolder.errors import OneLineParser, ReportInputError, fail, one_line, run_main
from runfolder.records import RecordError, read_json

TOWERS = ("transformer", "mixer")
GROUPS = ("pooling", "variants", "calibration")
# each image tower's other pooling: the ViT gets the Mixer's mean, the Mixer a learned query as CLIP's ViT
OTHER_POOL = {"transformer": "avg", "mixer": "map"}
POOL_PREFIX = {"transformer": "transformer-avgpool", "mixer": "mixer-mappool"}
# variant folder -> (the recipe field that makes it, its label in the summary)
VARIANTS = {"hard": ("--toy-task hard", "hard toy task"),
            "toy_seed1": ("--toy-seed 1", "toy seed 1 (another held-out square)")}
VARIANT_SEEDS = (0, 1, 2)  # new tasks: no seed of theirs has chosen anything there
CALIBRATION = "cnn"
CALIBRATION_FLAGS = "--precision bf16"  # the default recipe otherwise: the calibration arm is not tuned
# 5 seeds place the cnn arm beside the headline's two (paired on their first 5 seeds); it calibrates the
# task, so it is not powered for the headline's +-3-point interval (13 seeds a tower for the Transformer)
CALIBRATION_RUNS = 5
HEADLINE = "reference_tuned"  # results.drivers.tuning.HEADLINE_OUT, under --out
PRIMARY = controls_report.SEEN


@dataclass(frozen=True)
class Recipes:
    """Each arm's headline flags, the tuning-grid folder of its chosen config, the headline's fresh seeds."""

    flags: dict[str, str]
    folders: dict[str, str | None]
    fresh_seeds: list[int] | None
    tuning_root: Path


@dataclass(frozen=True)
class PlannedRun:
    group: str
    out: Path  # results.drivers.reference's --out
    tower: str
    prefix: str  # its --run-prefix
    seed: int
    flags: str  # the recipe's launch/train.py flags (the --extra-train-flags run options aside)

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / f"{self.prefix}-seed{self.seed}"


def grid_folder(tower: str, flags: str) -> str | None:
    """The tuning grid's folder of the config these flags train, None when they name no lr and warmup."""
    words = shlex.split(flags)
    value = {name: words[words.index(name) + 1] for name in ("--lr", "--warmup-steps", "--image-init")
             if name in words[:-1]}
    if "--lr" not in value or not value.get("--warmup-steps", "").isdigit():
        return None
    init = value.get("--image-init", "library")
    return Cell(tower, value["--lr"], int(value["--warmup-steps"]), init).folder


def read_recipes(tuning: Path, given: list[str]) -> Recipes:
    """The arms' recipes: `--recipe` where given, else tuning.json's; exit 2 naming the file when an arm
    has none (tuning.json missing, unreadable or not complete)."""
    overrides = {}
    for item in given:
        tower, _, flags = item.partition("=")
        if tower not in TOWERS or not flags.strip():
            fail(f"--recipe {item}: expected TOWER=\"FLAGS\" with TOWER one of {', '.join(TOWERS)}")
        overrides[tower] = flags.strip()
    summary: dict[str, Any] = {}
    try:
        summary = read_json(tuning, "equal-tuning summary (python -m results.drivers.tuning)")
    except RecordError as error:
        if set(overrides) != set(TOWERS):
            fail(f"{error}; or give both arms' flags with --recipe")
    chosen = (summary.get("headline_recipe") or {}).get("arms") or {}
    if set(overrides) != set(TOWERS) and not (summary.get("complete") and set(chosen) >= set(TOWERS)):
        fail(f"{tuning}: the equal-tuning grid is not complete (\"complete\": false), so no arm's headline "
             "recipe is chosen yet; wait for it, or give both arms' flags with --recipe")
    flags, folders = {}, {}
    for tower in TOWERS:
        flags[tower] = overrides.get(tower) or chosen[tower]["train_flags"]
        rows = [row for row in summary.get("arms", {}).get(tower, {}).get("configs", []) if row.get("chosen")]
        from_json = rows[0]["folder"] if rows and tower not in overrides else None
        folders[tower] = from_json or grid_folder(tower, flags[tower])
    fresh = (summary.get("power") or {}).get("fresh_seeds")
    return Recipes(flags, folders, list(fresh) if fresh else None, tuning.parent)


def plan(out: Path, groups: list[str], towers: list[str], recipes: Recipes, variant_seeds: list[int],
         calibration_seeds: list[int]) -> list[PlannedRun]:
    """Every run of the chosen groups, in training order: seed by seed, the arms interleaved, so a run cut
    short leaves both arms measured at the same seeds."""
    runs = []
    if "pooling" in groups:
        runs += [PlannedRun("pooling", out / "pooling", tower, POOL_PREFIX[tower], seed,
                            f"{recipes.flags[tower]} --image-pool {OTHER_POOL[tower]}")
                 for seed in SELECTION_SEEDS for tower in towers]
    if "variants" in groups:
        runs += [PlannedRun("variants", out / "toy_variants" / name, tower, tower, seed,
                            f"{recipes.flags[tower]} {flag}")
                 for name, (flag, _) in VARIANTS.items() for seed in variant_seeds for tower in towers]
    if "calibration" in groups:
        runs += [PlannedRun("calibration", out / HEADLINE, CALIBRATION, CALIBRATION, seed, CALIBRATION_FLAGS)
                 for seed in calibration_seeds]
    return runs


def train(run: PlannedRun, extra_flags: str, allow_dirty: bool) -> None:
    """One run with results.drivers.reference's command (it reuses a finished run, retrains a broken one)."""
    reference.main(["--out", str(run.out), "--towers", run.tower, "--run-prefix", run.prefix,
                    "--seeds", str(run.seed), "--train-flags", f"{run.flags} {extra_flags}".strip(),
                    "--skip-sts", "--skip-word-order", "--skip-throughput", "--no-report",
                    *(["--allow-dirty"] if allow_dirty else [])])


def _finished(folder: Path, prefixes: list[str]) -> list[Path]:
    """The finished runs `<prefix>-seed<k>` in `folder`, prefix by prefix (the first prefix: the baseline)."""
    return [path for prefix in prefixes for path in sorted(folder.glob(f"{prefix}-seed*"))
            if controls_report.finished(path)]


def report_pooling(out: Path, towers: list[str], recipes: Recipes) -> list[Path]:
    pairs = {}
    for tower in towers:
        if recipes.folders[tower] is None:
            fail(f"--recipe {tower}: its flags name no tuning-grid config (--lr and --warmup-steps); the "
                 "pooling control's baselines are the grid's runs of the arm's chosen config")
        grid = recipes.tuning_root / tower / recipes.folders[tower] / "runs"
        runs = out / "pooling" / "runs"
        pairs[tower] = [(seed, grid / f"{tower}-seed{seed}", runs / f"{POOL_PREFIX[tower]}-seed{seed}")
                        for seed in SELECTION_SEEDS]
    summary = controls_report.pooling_summary(pairs, {tower: OTHER_POOL[tower] for tower in towers})
    return list(controls_report.write_pooling(summary, out / "pooling"))


def _report(run_dirs: list[Path], scores: Path, report_dir: Path) -> list[Path]:
    if not run_dirs:
        print(f"note: no finished runs for {report_dir}; report not written")
        return []
    result = write_report(run_dirs, scores, report_dir, scores_required=False, primary=PRIMARY,
                          recipe_per_arm=True, options=["--primary", PRIMARY])
    print(result["primary_sentence"])
    return [result["report_md"]]


def report_variants(out: Path, towers: list[str]) -> list[Path]:
    written = []
    headline = out / HEADLINE / "runs"
    conditions = [("standard", f"standard (the headline, {HEADLINE}/)",
                   {tower: _finished(headline, [tower]) for tower in TOWERS})]
    for name, (_, label) in VARIANTS.items():
        folder = out / "toy_variants" / name
        arms = {tower: _finished(folder / "runs", [tower]) for tower in towers}
        run_dirs = [path for tower in towers for path in arms[tower]]
        written += _report(run_dirs, folder / "scores", folder / "report")
        conditions.append((name, label, arms))
    summary = controls_report.variants_summary(conditions)
    return written + list(controls_report.write_variants(summary, out / "toy_variants"))


def report_calibration(out: Path) -> list[Path]:
    """The headline's arms, the Transformer first (the baseline each arm is compared with), then the cnn."""
    folder = out / HEADLINE
    runs = _finished(folder / "runs", [*TOWERS, CALIBRATION])
    if not any(path.name.startswith(f"{CALIBRATION}-") for path in runs):
        print(f"note: no finished {CALIBRATION} runs in {folder / 'runs'}; calibration report not written")
        return []
    return _report(runs, folder / "scores", folder / "calibration")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m results.drivers.controls", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tuning", type=Path, default=Path("results/tuning/tuning.json"),
                        help="the equal-tuning summary the headline recipes come from; its folder holds the "
                             "grid's runs (the pooling baselines)")
    parser.add_argument("--recipe", action="append", default=[], metavar="TOWER=FLAGS",
                        help="an arm's headline launch/train.py flags, instead of --tuning's")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="groups to run")
    parser.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS),
                        help="arms of the pooling and variant groups")
    parser.add_argument("--variant-seeds", nargs="+", type=int, default=list(VARIANT_SEEDS),
                        help="seeds of the toy variants (default 0 1 2: the variants are new tasks, so their "
                             "seeds were never used to choose anything there)")
    parser.add_argument("--calibration-seeds", nargs="+", type=int, default=None,
                        help="seeds of the cnn arm (default: the first 5 of the headline's fresh seeds, "
                             f"tuning.json power.fresh_seeds, else {FIRST_FRESH_SEED}-"
                             f"{FIRST_FRESH_SEED + CALIBRATION_RUNS - 1}). The calibration arm is not tuned "
                             "(the default recipe at --precision bf16): what it calibrates is the task")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="the folder holding pooling/, toy_variants/ and reference_tuned/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan (runs to train, runs reused)")
    mode.add_argument("--report-only", action="store_true", help="write the reports from the runs there")
    parser.add_argument("--extra-train-flags", default="",
                        help="run options for every run, not recipe fields, e.g. \"--cpu-threads 1\"")
    parser.add_argument("--allow-dirty", action="store_true", help=ALLOW_DIRTY_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    groups = [group for group in GROUPS if group in args.only]
    towers = [tower for tower in TOWERS if tower in args.towers]
    recipes = read_recipes(args.tuning, args.recipe)
    fresh = recipes.fresh_seeds or []
    calibration_seeds = args.calibration_seeds or (
        fresh[:CALIBRATION_RUNS] if len(fresh) >= CALIBRATION_RUNS
        else list(range(FIRST_FRESH_SEED, FIRST_FRESH_SEED + CALIBRATION_RUNS)))
    runs = plan(args.out, groups, towers, recipes, args.variant_seeds, calibration_seeds)
    if args.dry_run:
        for run in runs:
            verb = "reuse" if controls_report.finished(run.run_dir) else "train"
            print(f"{verb} {run.run_dir}  --tower {run.tower} --seed {run.seed} {run.flags}")
        reused = sum(controls_report.finished(run.run_dir) for run in runs)
        print(f"{len(runs) - reused} runs to train, {reused} reused")
        return 0
    if not args.report_only:
        require_clean_tree(args.allow_dirty)
        for run in runs:
            if not controls_report.finished(run.run_dir):
                train(run, args.extra_train_flags, args.allow_dirty)
    written = []
    try:
        if "pooling" in groups:
            written += report_pooling(args.out, towers, recipes)
        if "variants" in groups:
            written += report_variants(args.out, towers)
        if "calibration" in groups:
            written += report_calibration(args.out)
    except ReportInputError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
