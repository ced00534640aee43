"""The plateau report: how far the default run's curve is from levelling off, per tower, measured on the
`plateau` target's chains (results/scaling/sweep.yaml; docs/toy-protocol.md#plateau).

    python -m results.plateau_report --out results/plateau          # after the sweep driver's runs:
    python -m results.drivers.scaling_sweep run --target plateau --out results/plateau  # (writes it too)

Per chain (tower, seed): each budget's cooldown branch at its end (toy zero-shot top-1 on the seen and the
held-out classes, val loss), the gains from one budget to the next, the trunk's (constant lr) seen top-1
at its branch points and half-way between them, and, with two towers, the second minus the first at each
budget. Writes `<out>/report/plateau.md` and `plateau.json` (every branch's whole curve too). A
measurement, no verdict. It refuses (one line, exit 2) a planned run that has not finished and runs whose
recipes differ in anything the sweep does not vary. Reads run folders through runfolder's typed readers;
no model code.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results.runs import describe_differences, recipe_differences
from results.scaling_spec import (
    DEFAULT_SPEC,
    SWEPT_RECIPE_FIELDS,
    PlannedRun,
    SpecError,
    Target,
    families,
    load_spec,
    plan,
    read_lr_choice,
    target,
)
from runfolder import RunFolder
from runfolder.errors import OneLineParser, ReportInputError, run_main
from runfolder.records import RecordError, final_eval_row, write_json
from runfolder.vocabulary import TOY_TOP1_HELD_OUT, TOY_TOP1_SEEN, TOY_VAL_LOSS

# the toy evaluation's numbers, as metrics.jsonl rows and final_eval_row name them (no `eval/` prefix)
SEEN, HELD_OUT, VAL_LOSS = TOY_TOP1_SEEN, TOY_TOP1_HELD_OUT, TOY_VAL_LOSS
METRICS = (SEEN, HELD_OUT, VAL_LOSS)


def trunk_steps(t: Target) -> list[int]:
    """The trunk steps the report reads: every branch point and the step half-way between neighbours."""
    points = sorted({t.branch_point(b) for b in t.budgets})
    return sorted(set(points) | {(a + b) // 2 for a, b in zip(points, points[1:], strict=False)})


@dataclass(frozen=True)
class FinishedRun:
    """What the report reads from one finished run (results.runs.recipe_differences compares these)."""

    name: str
    label: str  # the run folder, for messages
    recipe: dict[str, Any]
    recipe_sha256: str | None
    final: dict[str, float | None]  # METRICS at the run's end (final_eval.json)
    curve: list[dict[str, Any]]  # every evaluation: step, samples_seen, METRICS
    provenance: dict[str, Any]  # commit (and a dirty tree's diff), device, CPU capability, torch threads

    @property
    def seed(self) -> Any:
        return self.recipe.get("seed")


def _read(run: PlannedRun, runs_dir: Path) -> FinishedRun:
    folder = RunFolder(runs_dir / run.name)
    try:
        config = folder.read_run_config()
        final = folder.read_final_eval()
        evals = folder.read_metric_rows().evals
    except RecordError as error:
        raise ReportInputError(str(error)) from None
    row = final_eval_row(final)
    return FinishedRun(
        name=run.name, label=str(folder.path), recipe=config.recipe,
        recipe_sha256=config.get("recipe_sha256"),
        final={k: row.get(k) for k in METRICS},
        curve=[{"step": e["step"], "samples_seen": e.get("samples_seen"), **{k: e.get(k) for k in METRICS}}
               for e in evals],
        provenance={k: config.get(k) for k in ("git_commit", "git_diff_sha256", "device", "cpu_capability",
                                               "torch_threads")})


def _shared_recipe(runs: list[FinishedRun]) -> dict:
    """The recipe every run shares outside the swept fields; refuses runs that differ in one of those."""
    differences = recipe_differences(runs, ignore=SWEPT_RECIPE_FIELDS)
    differences.pop("recipe_sha256", None)  # steps differ within a seed by design
    if differences:
        raise ReportInputError("the plateau runs differ in recipe fields the sweep does not vary: "
                               + describe_differences(differences))
    return {k: v for k, v in runs[0].recipe.items() if k not in SWEPT_RECIPE_FIELDS}


def _change(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


def collect_plateau(spec: dict, t: Target, out: Path) -> dict:
    """Every chain's budgets, gains and trunk reads, the shared recipe and where the runs were trained."""
    runs_dir = out / "runs"
    chains = plan(spec, t, "grid", runs_dir, read_lr_choice(out)["best_lr"])
    planned = [run for runs in chains for run in runs]
    missing = [run.name for run in planned if not RunFolder(runs_dir / run.name).final_eval.is_file()]
    if missing:
        raise ReportInputError(f"{runs_dir}: {len(missing)} of the {len(planned)} planned runs have not "
                               f"finished (first: {missing[0]}); run `python -m "
                               f"results.drivers.scaling_sweep run --target {t.name} --out {out}` to finish "
                               "them")
    read = {run.name: _read(run, runs_dir) for run in planned}
    shared = _shared_recipe(list(read.values()))
    smallest, steps = min(t.budgets), trunk_steps(t)
    rows = []
    for trunk, *branches in chains:
        curve = {e["step"]: e for e in read[trunk.name].curve}
        budgets = [{"budget": b.budget, "multiple": b.budget / smallest, "steps": t.steps(b.budget),
                    "cooldown_steps": t.cooldown(b.budget), "branch_step": b.branch_step, "run": b.name,
                    "recipe_sha256": read[b.name].recipe_sha256, **read[b.name].final}
                   for b in sorted(branches, key=lambda b: b.budget)]
        gains = [{"from": a["multiple"], "to": b["multiple"], **{k: _change(b[k], a[k]) for k in METRICS}}
                 for a, b in zip(budgets, budgets[1:], strict=False)]
        rows.append({"family": trunk.family, "size": trunk.size, "seed": trunk.seed, "lr": trunk.lr,
                     "trunk": {"run": trunk.name, SEEN: {s: curve.get(s, {}).get(SEEN) for s in steps}},
                     "budgets": budgets, "gains": gains,
                     "curves": {r.name: read[r.name].curve for r in (trunk, *branches)}})
    order = families(spec)
    differences = []
    if len(order) == 2:  # the second tower minus the first (the spec's order), seed by seed
        by_key = {(r["family"], r["size"], r["seed"]): r for r in rows}
        for (family, size, seed), second in by_key.items():
            first = by_key.get((order[0], size, seed))
            if family != order[1] or first is None:
                continue
            for a, b in zip(first["budgets"], second["budgets"], strict=True):
                differences.append({"size": size, "seed": seed, "budget": a["budget"],
                                    **{k: _change(b[k], a[k]) for k in METRICS}})
    provenance = sorted({json.dumps(r.provenance, sort_keys=True) for r in read.values()})
    timings_file = out / "timings.json"  # the driver's: wall seconds per run
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    return {"target": t.name, "families": order, "sizes": t.sizes, "budgets": sorted(t.budgets),
            "trunk_steps": steps, "chains": rows, "differences": differences, "shared_recipe": shared,
            "provenance": [json.loads(p) for p in provenance],
            "wall_seconds": sum(timings.get(f"train {name}", 0.0) for name in read),
            "timed_runs": sum(f"train {name}" in timings for name in read)}


def _num(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def _times(multiple: float) -> str:
    return f"{multiple:g}x"


def _where(p: dict) -> str:
    """Where runs were trained: the commit (and a dirty tree's diff), the device, the torch threads."""
    diff = p.get("git_diff_sha256")
    dirty = f" with uncommitted changes (diff sha256 {diff[:12]})" if diff else ""
    return (f"commit {p['git_commit']}{dirty}, {p['device']} ({p['cpu_capability']}), {p['torch_threads']} "
            "torch threads")


def plateau_markdown(data: dict) -> str:
    budgets, steps = data["budgets"], data["trunk_steps"]
    chains = data["chains"]
    shas = sorted({r["budgets"][0]["recipe_sha256"] for r in chains})
    lines = [f"# Plateau: {' vs '.join(data['families'])} at {', '.join(data['sizes'])} (target "
             f"{data['target']})", "",
             f"One chain per tower and seed: a constant-lr trunk to step {steps[-1]}, and from its "
             "checkpoints a cooldown branch per budget (" + " / ".join(f"{b:,}" for b in budgets)
             + " samples, "
             + " / ".join(_times(b / budgets[0]) for b in budgets) + "). Toy zero-shot top-1 (%) on the "
             "seen and the held-out classes and the val loss, at the end of each branch. The "
             f"{budgets[0]:,}-sample branch's recipe_sha256: {', '.join(str(s) for s in shas)}.", "",
             "## Each budget", "",
             "| tower | seed | samples | steps (cooldown) | seen top-1 | held-out top-1 | val loss |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in chains:
        for b in r["budgets"]:
            lines.append(f"| {r['family']} | {r['seed']} | {b['budget']:,} ({_times(b['multiple'])}) | "
                         f"{b['steps']} ({b['cooldown_steps']}) | {_num(b[SEEN], '.1f')} | "
                         f"{_num(b[HELD_OUT], '.1f')} | {_num(b[VAL_LOSS], '.3f')} |")
    lines += ["", "## Gains from one budget to the next (top-1 in points)", "",
              "| tower | seed | budgets | seen top-1 | held-out top-1 | val loss |",
              "|---|---|---|---:|---:|---:|"]
    for r in chains:
        for g in r["gains"]:
            lines.append(f"| {r['family']} | {r['seed']} | {_times(g['from'])} -> {_times(g['to'])} | "
                         f"{_num(g[SEEN], '+.1f')} | {_num(g[HELD_OUT], '+.1f')} | "
                         f"{_num(g[VAL_LOSS], '+.3f')} |")
    lines += ["", "## The trunk (constant lr, no cooldown): seen top-1 at its branch points and half-way", "",
              "| tower | seed | " + " | ".join(f"step {s}" for s in steps) + " |",
              "|---|---|" + "---:|" * len(steps)]
    for r in chains:
        lines.append(f"| {r['family']} | {r['seed']} | "
                     + " | ".join(_num(r["trunk"][SEEN][s], ".1f") for s in steps) + " |")
    if data["differences"]:
        first, second = data["families"]
        lines += ["", f"## {second} minus {first} at each budget", "",
                  "| seed | samples | seen top-1 | held-out top-1 | val loss |", "|---|---:|---:|---:|---:|"]
        for d in data["differences"]:
            lines.append(f"| {d['seed']} | {d['budget']:,} | {_num(d[SEEN], '+.1f')} | "
                         f"{_num(d[HELD_OUT], '+.1f')} | {_num(d[VAL_LOSS], '+.3f')} |")
    lines += ["", "## Runs", "", "Trained at: " + "; ".join(map(_where, data["provenance"])) + "."]
    if data["timed_runs"]:
        lines.append(f"Sum of the runs' wall times: {data['wall_seconds'] / 60:.1f} min "
                     f"({data['timed_runs']} runs, timings.json; runs trained side by side by `--jobs` "
                     "overlap in it).")
    lines += ["", "Shared recipe (every run; swept: " + ", ".join(SWEPT_RECIPE_FIELDS) + "):", "",
              "```json", json.dumps(data["shared_recipe"], indent=1, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def write_plateau_report(spec: dict, t: Target, out: Path) -> dict:
    data = collect_plateau(spec, t, out)
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plateau.md").write_text(plateau_markdown(data))
    write_json(folder / "plateau.json", data)
    return {"report_md": folder / "plateau.md", "report_json": folder / "plateau.json", "data": data}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m results.plateau_report", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="sweep specification (YAML)")
    parser.add_argument("--target", default="plateau", help="target in the spec (default: plateau)")
    parser.add_argument("--out", type=Path, default=Path("results/plateau"),
                        help="the sweep folder (runs/, lr_choice.json); default: results/plateau")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        result = write_plateau_report(spec, target(spec, args.target), args.out)
    except (SpecError, ReportInputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result['report_md']}")
    print(f"wrote {result['report_json']}")
    return 0


if __name__ == "__main__":
    run_main(main)
