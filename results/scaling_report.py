"""The scaling-law report: each family's frontier, fitted law and held-out points, and the verdict.

    python -m results.scaling_report                       # results/scaling -> results/scaling/report/
    python -m results.scaling_report --out /tmp/sweep --target toy
    python -m results.scaling_report --partial             # a sweep still running: its finished runs
    python -m results.scaling_report --table results/published/published_results.csv --families clip mammut \
        --benchmark imagenet1k --dataset datacomp_1b --schedule cosine --fit-below 3e21 --out DIR

Reads the sweep folder `results.drivers.scaling_sweep` filled (runs/, lr_choice.json, timings.json) and writes
`report/report.md`, `report/scaling.png` and `report/summary.json`. It refuses (one line, exit 2) runs
whose recipes differ in anything but the swept fields (steps, cooldown_steps, lr, seed). With `--table`
it reads a published-results table (results/published.py's schema) instead, one run per (model, samples
seen), compute = 3 x forward FLOPs x samples seen, and writes the same report to DIR. Both go through
`fitted_report`: the matched cells first, then the laws. Reads files only; no model code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from results.anchors import anchor_run
from results.figures import _flop_unit, _save, plt
from results.published import load_table, select
from results.runs import ReportInputError, describe_differences, load_run, recipe_differences
from results.scaling_cells import cells_table, matched_cells
from results.scaling_fit import compare, law_sentence, verdict_sentence
from results.scaling_spec import (
    DEFAULT_SPEC,
    PHASES,
    SWEPT_RECIPE_FIELDS,
    SpecError,
    Target,
    load_spec,
    plan,
    read_lr_choice,
    run_error,
    target,
)
from runfolder.errors import OneLineParser, run_main

COLOURS = {"transformer": "#1f77b4", "mixer": "#d62728", "clip": "#1f77b4", "mammut": "#2ca02c"}
METRIC_NAMES = {"toy_top1": "toy zero-shot top-1 error", "imagenet_top1": "ImageNet zero-shot top-1 error",
                "imagenet1k": "ImageNet zero-shot top-1 error"}


def collect(spec: dict, t: Target, out: Path, partial: bool = False) -> dict:
    """Grid points per family ({compute, errors, label, size, budget}), the branch check, and the runs'
    recipes checked to agree outside the swept fields. `partial`: only the finished runs, and
    `progress` says how many of the planned ones that is."""
    runs_dir = out / "runs"
    choice = read_lr_choice(out)
    chains = {phase: plan(spec, t, phase, runs_dir, choice["best_lr"]) for phase in PHASES}
    planned = list({run.name: run for phase in chains.values() for runs in phase for run in runs
                    if run.kind != "trunk"}.values())  # the chosen lr's tuning chain is also the grid's
    missing = [run.name for run in planned if run_error(runs_dir / run.name, t.metric) is None]
    if missing and not partial:
        raise ReportInputError(f"{runs_dir}: {len(missing)} planned runs have not finished (first: "
                               f"{missing[0]}); run `python -m results.drivers.scaling_sweep run` to finish "
                               "them")
    finished = [run for run in planned if run.name not in missing]
    if not finished:
        raise ReportInputError(f"{runs_dir}: no planned run has finished yet")
    loaded = {run.name: load_run(runs_dir / run.name) for run in finished}
    differences = recipe_differences(list(loaded.values()), ignore=SWEPT_RECIPE_FIELDS)
    differences.pop("recipe_sha256", None)  # steps and lr differ within a seed by design
    if differences:
        raise ReportInputError("the sweep's runs differ in recipe fields it does not sweep: "
                               + describe_differences(differences))
    points: dict[str, dict[tuple, dict]] = {}
    for runs in chains["grid"]:
        for run in (r for r in runs[1:] if r.name in loaded):
            gflops = loaded[run.name].train_gflops
            point = points.setdefault(run.family, {}).setdefault((run.size, run.budget), {
                "compute": gflops * 1e9 * run.budget, "errors": [], "size": run.size, "budget": run.budget,
                "label": f"{run.size} {run.budget / 1e3:g}k"})
            point["errors"].append(run_error(runs_dir / run.name, t.metric))
    check = []
    for (fresh,) in chains["check"]:
        branch = fresh.name.removesuffix("-fresh")
        if fresh.name not in loaded or branch not in loaded:
            continue
        check.append({"family": fresh.family, "seed": fresh.seed,
                      "fresh": run_error(runs_dir / fresh.name, t.metric),
                      "branch": run_error(runs_dir / branch, t.metric)})
    recipe = next(iter(loaded.values())).recipe
    shared = {k: v for k, v in recipe.items() if k not in SWEPT_RECIPE_FIELDS}
    return {"points": {f: list(p.values()) for f, p in points.items()}, "check": check, "choice": choice,
            "anchors": [anchor_run(run.config, run.final_eval.get("imagenet_top1"))
                        for run in loaded.values()],
            "shared_recipe": shared, "progress": {"finished": len(finished), "planned": len(planned),
                                                  "first_missing": missing[0] if missing else None}}


def scaling_figure(result: dict, data: dict, path: Path) -> Path:
    """Grid points (faint), frontier (filled), held-out frontier points (open), each law with its 95%
    bootstrap band out to 100x the largest measured compute."""
    scale, unit = _flop_unit(result["largest_compute"])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    grid = np.geomspace(min(p["compute"] for ps in data["points"].values() for p in ps),
                        100 * result["largest_compute"], 200)
    for family in result["families"]:
        fit, colour = result["fits"][family], COLOURS.get(family, "#555555")
        every = data["points"][family]
        ax.scatter([p["compute"] / scale for p in every], [np.mean(p["errors"]) for p in every], s=14,
                   color=colour, alpha=0.3, marker=".")
        for held, marker in ((False, "o"), (True, "o")):
            rows = [r for r in fit.frontier if r["held_out"] == held]
            ax.scatter([r["compute"] / scale for r in rows], [r["error"] for r in rows], s=40, marker=marker,
                       facecolors="none" if held else colour, edgecolors=colour,
                       label=f"{family} {'held out' if held else 'frontier (fitted)'}")
        draws = fit.samples
        if fit.determined:
            curves = (draws["a"][:, None] * (grid[None] / fit.law.c_ref) ** -draws["alpha"][:, None]
                      + draws["e_inf"][:, None])
            band = np.clip(np.percentile(curves, [2.5, 97.5], axis=0), 0, 100)  # an error stays in [0, 100]
            ax.fill_between(grid / scale, *band, color=colour, alpha=0.12)
        if fit.law is not None:
            ax.plot(grid / scale, np.clip(fit.law(grid), 0, 100), color=colour,
                    ls="-" if fit.determined else "--",
                    label=f"{family}: {fit.law.a:.1f}·(C/C0)^-{fit.law.alpha:.2f} + {fit.law.e_inf:.1f}"
                          + ("" if fit.determined else " (under-determined)"))
    ax.axvline(result["largest_compute"] / scale, color="#999999", lw=0.8, ls=":")
    ax.set_ylim(0, 100)
    ax.set_xscale("log")
    ax.set_xlabel(f"training compute ({unit})")
    ax.set_ylabel("zero-shot top-1 error (points)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _interval(pair) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def _interval_or_dash(pair) -> str:
    return "-" if pair is None or np.isnan(pair[0]) else _interval(pair)


def _onset_cell(labels: list[str]) -> str:
    """A few labels, then a count (the published table has dozens; summary.json lists them all)."""
    return "-" if not labels else ", ".join(labels[:4]) + (f" and {len(labels) - 4} more" if len(labels) > 4
                                                            else "")


def _number(value: float, form: str = ".2f") -> str:
    return "-" if np.isnan(value) else format(value, form)


def report_markdown(result: dict, cells: dict, title: str, metric: str, extra: list[str]) -> str:
    """The matched cells first, then the laws (each family's status), the frontier and the verdicts."""
    onset = result["onset_error"]
    cut = result["fit_below"]
    lines = [f"# {title}", "", verdict_sentence(result, metric, cells), "",
             "## Measured: matched (size, budget) cells (error, points; seeds in brackets)", ""]
    lines += cells_table(cells) if cells["cells"] else ["No (size, budget) cell was trained by both."]
    lines += ["", "## Fitted laws: E(C) = A (C/C0)^-alpha + E_inf on the compute-optimal frontier", "",
              "Learning-onset rule: " + (f"only points with error below {onset:g} are fitted (the rule and "
                                         "its reason: docs/scaling-laws.md)" if onset is not None else
                                         "none (every point may be on the frontier)")
              + "; held out: " + (f"frontier points above {cut:.3g} FLOPs" if cut is not None else
                                  "the largest-compute frontier points") + ".", "",
              "| family | A | alpha | E_inf | C0 (FLOPs) | status | before the onset |",
              "|---|---|---|---|---|---|---|"]
    for family, fit in result["fits"].items():
        ci = fit.intervals or {}
        if fit.law is None:
            cells_law = "- | - | -"
        else:
            cells_law = (f"{fit.law.a:.2f} {_interval_or_dash(ci.get('a'))} | {fit.law.alpha:.3f} "
                         f"{_interval_or_dash(ci.get('alpha'))} | {fit.law.e_inf:.2f} "
                         f"{_interval_or_dash(ci.get('e_inf'))}")
        c0 = f"{fit.law.c_ref:.3g}" if fit.law else "-"
        lines.append(f"| {family} | {cells_law} | {c0} | {fit.status()} | "
                     f"{_onset_cell(fit.before_onset)} |")
    lines += ["", "## Frontier and held-out predictions", "",
              "| family | point | compute | error | predicted | held out |", "|---|---|---|---|---|---|"]
    for family, fit in result["fits"].items():
        for r in fit.frontier:
            lines.append(f"| {family} | {r['label']} | {r['compute']:.3g} | {r['error']:.2f} | "
                         f"{_number(r['predicted'])} | {'yes' if r['held_out'] else ''} |")
    lines += ["", "Held-out prediction error (predicted - observed): " + "; ".join(
        f"{f} " + (", ".join(f"{e:+.2f}" for e in fit.prediction_error) or "none")
        for f, fit in result["fits"].items()), "",
        "## What the laws say", "", law_sentence(result), "",
        "| compute | kind | " + " | ".join(result["families"]) + " | difference | better |",
        "|---|---|---|---|---|---|"]
    for v in result["verdicts"]:
        shown = [f"{_number(v['predicted'][f])} {_interval_or_dash(v['predicted_interval'][f])}"
                 for f in result["families"]]
        word = (v["better"] or "neither") if v["kind"] == "verdict" and v["determined"] else "-"
        lines.append(f"| {v['horizon']:g}x = {v['compute']:.3g} | {v['kind']} | " + " | ".join(shown)
                     + f" | {_number(v['difference'], '+.2f')} {_interval_or_dash(v['interval'])} | {word} |")
    return "\n".join(lines + [""] + extra) + "\n"


def partial_markdown(data: dict, t: Target, timings: dict) -> str:
    """A sweep still running: what has finished, and no law (the frontier moves as points arrive)."""
    progress = data["progress"]
    families = " vs ".join(data["points"]) or "no grid point yet"
    lines = [f"# Scaling laws: {families} ({t.name}), partial", "",
             f"**Partial: {progress['finished']} of {progress['planned']} planned runs have finished** "
             f"(next: {progress['first_missing']}). No law is fitted and no verdict drawn until the sweep "
             "has finished: `python -m results.drivers.scaling_sweep run` resumes it.", ""]
    return "\n".join(lines + _measured_lines(data, t, timings)) + "\n"


def _measured_lines(data: dict, t: Target, timings: dict) -> list[str]:
    anchors = data.get("anchors", [])
    reasons = sorted({a.reason for a in anchors if a.published is None})
    lines = ["## Anchors to published CLIP runs", "",
             f"{sum(a.published is not None for a in anchors)} of {len(anchors)} runs have a published "
             "counterpart (results/anchors.py)" + (": " + "; ".join(reasons) if reasons else "") + ".", ""]
    flagged = [f"> **{a.summary()}**" for a in anchors if a.flagged]
    lines += flagged + ([""] if flagged else [])
    lines += ["## Grid (error by seed)", "", "| family | size | samples | compute | errors | mean |",
              "|---|---|---|---|---|---|"]
    for family, points in data["points"].items():
        for p in sorted(points, key=lambda p: p["compute"]):
            lines.append(f"| {family} | {p['size']} | {p['budget']:,} | {p['compute']:.3g} | "
                         + ", ".join(f"{e:.1f}" for e in p["errors"]) + f" | {np.mean(p['errors']):.2f} |")
    choice = data["choice"]
    budgets = sorted(map(int, t.budgets))
    lines += ["", f"## Learning-rate tuning at {choice['size']} (error by seed; chosen by the mean at "
              f"{choice['budget']:,} samples)", "",
              "| family | lr | " + " | ".join(f"{b:,} samples" for b in budgets) + " | chosen |",
              "|---|---|" + "---|" * (len(budgets) + 1)]
    for family, by_lr in choice["grid"].items():
        for lr, errors in by_lr.items():
            cells = [", ".join("-" if e is None else f"{e:.1f}" for e in errors[str(b)]) for b in budgets]
            lines.append(f"| {family} | {lr} | " + " | ".join(cells)
                         + f" | {'yes' if float(lr) == choice['best_lr'][family] else ''} |")
    lines += ["", f"## Cooldown branch vs fresh run ({t.check_size}, {t.check_budget:,} samples)", "",
              "| family | seed | branch | fresh | branch - fresh |", "|---|---|---|---|---|"]
    for row in data["check"]:
        lines.append(f"| {row['family']} | {row['seed']} | {row['branch']:.2f} | {row['fresh']:.2f} | "
                     f"{row['branch'] - row['fresh']:+.2f} |")
    lines += ["", "Seed noise: the spread of the grid's seeds at that point is in the grid table above.", "",
              "## Shared recipe (every run; swept: " + ", ".join(SWEPT_RECIPE_FIELDS) + ")", "",
              "```json", json.dumps(data["shared_recipe"], indent=1, sort_keys=True), "```", ""]
    if timings:
        lines += [f"Sum of the runs' wall times: {sum(timings.values()) / 3600:.2f} h ({len(timings)} runs, "
                  "timings.json; runs trained side by side by `--jobs` overlap in it).", ""]
    lines.append("![scaling](scaling.png)")
    return lines


def points_figure(data: dict, path: Path) -> Path:
    """A partial sweep's grid: seed-mean error against compute, a line per family and size."""
    every = [p for ps in data["points"].values() for p in ps]
    scale, unit = _flop_unit(max((p["compute"] for p in every), default=1.0))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for family, points in data["points"].items():
        sizes = list(dict.fromkeys(p["size"] for p in points))
        for i, size in enumerate(sizes):  # the larger the size, the darker its line
            row = sorted((p for p in points if p["size"] == size), key=lambda p: p["compute"])
            ax.plot([p["compute"] / scale for p in row], [np.mean(p["errors"]) for p in row], marker="o",
                    color=COLOURS.get(family, "#555555"), alpha=0.35 + 0.65 * (i + 1) / len(sizes),
                    label=f"{family} {size}")
    ax.set_xscale("log")
    ax.set_xlabel(f"training compute ({unit})")
    ax.set_ylabel("zero-shot top-1 error (points)")
    ax.set_title("partial sweep: no law fitted yet", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def fitted_report(data: dict, folder: Path, title: str, metric: str, extra: list[str], holdout: int,
                  bootstrap: int, onset_error: float | None = None, fit_below: float | None = None) -> dict:
    """The one path from grid points to report.md, scaling.png and summary.json (toy sweep and tables)."""
    folder.mkdir(parents=True, exist_ok=True)
    cells = matched_cells(data["points"])
    result = compare(data["points"], holdout=holdout, bootstrap=bootstrap, onset_error=onset_error,
                     fit_below=fit_below)
    scaling_figure(result, data, folder / "scaling.png")
    (folder / "report.md").write_text(report_markdown(result, cells, title, metric, extra))
    summary = {"verdict": verdict_sentence(result, metric, cells), "cells": cells,
               "crossings": result["crossings"], "measured_crossings": result["measured_crossings"],
               "onset_error": onset_error, "fit_below": fit_below,
               "laws": {f: {"status": fit.status(), "determined": fit.determined, "fitted_points": fit.fitted,
                            "before_onset": fit.before_onset,
                            **({"a": fit.law.a, "alpha": fit.law.alpha, "e_inf": fit.law.e_inf,
                                "c_ref": fit.law.c_ref} if fit.law else {}),
                            "intervals": fit.intervals, "prediction_error": fit.prediction_error,
                            "frontier": fit.frontier}
                        for f, fit in result["fits"].items()},
               "verdicts": result["verdicts"]}
    (folder / "summary.json").write_text(json.dumps(_nan_to_none(summary), indent=2, allow_nan=False) + "\n")
    return {"verdict": summary["verdict"], "report_md": folder / "report.md", "result": result,
            "cells": cells}


def _nan_to_none(value):
    """JSON has no NaN: an undefined number (an under-determined law's interval) is written as null."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def write_scaling_report(spec: dict, t: Target, out: Path, bootstrap: int | None = None,
                         partial: bool = False) -> dict:
    data = collect(spec, t, out, partial)
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    progress = data["progress"]
    if progress["finished"] < progress["planned"]:
        points_figure(data, folder / "scaling.png")
        (folder / "report.md").write_text(partial_markdown(data, t, timings))
        verdict = (f"partial sweep: {progress['finished']} of {progress['planned']} runs finished; "
                   "no verdict until it has finished")
        (folder / "summary.json").write_text(json.dumps({"verdict": None, "progress": progress}, indent=2)
                                             + "\n")
        return {"verdict": verdict, "report_md": folder / "report.md", "result": None}
    fit_spec = spec.get("fit") or {}
    return fitted_report(data, folder, f"Scaling laws: {' vs '.join(sorted(data['points']))} ({t.name})",
                         METRIC_NAMES.get(t.metric, f"{t.metric} error"), _measured_lines(data, t, timings),
                         holdout=int(fit_spec.get("holdout", 2)),
                         bootstrap=int(fit_spec.get("bootstrap", 1000) if bootstrap is None else bootstrap),
                         onset_error=t.onset_error)


def collect_table(table: Path, families: list[str], benchmark: str, dataset: str, schedule: str) -> dict:
    """Grid points per family from a published-results table: one per (model, samples seen), error =
    100 - value, compute = training FLOPs (3 x forward)."""
    rows = load_table(table)
    points: dict[str, list[dict]] = {}
    for family in families:
        chosen = select(rows, family=family, benchmark=benchmark, dataset=dataset, schedule=schedule)
        if not chosen:
            raise ReportInputError(f"{table}: no {family} rows for benchmark {benchmark}, dataset {dataset}, "
                                   f"schedule {schedule}")
        if any(r.gflops_per_sample is None for r in chosen):
            raise ReportInputError(f"{table}: {family} rows without gflops_per_sample: no compute to fit on")
        points[family] = [{"compute": r.train_flops, "errors": [100.0 - r.value], "size": r.model,
                           "budget": r.samples_seen, "label": f"{r.model} {r.samples_seen / 1e6:g}M"}
                          for r in chosen]
    return {"points": points}


def table_lines(data: dict, table: Path, args) -> list[str]:
    lines = ["## Source", "", f"Table `{table}`: benchmark {args.benchmark}, dataset {args.dataset}, "
             f"schedule {args.schedule}; "
             + ", ".join(f"{f} {len(p)} points" for f, p in data["points"].items())
             + ". Compute: 3 x the table's forward GFLOPs per sample x samples seen.", "",
             "![scaling](scaling.png)"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m results.scaling_report", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--target", default="toy")
    parser.add_argument("--out", type=Path, default=None,
                        help="the sweep folder (default results/scaling); with --table, the report folder")
    parser.add_argument("--bootstrap", type=int, default=None, help="resamples (default: the spec's)")
    parser.add_argument("--partial", action="store_true",
                        help="a sweep still running: tables of the finished runs, no law and no verdict")
    table = parser.add_argument_group("a published-results table instead of a sweep")
    table.add_argument("--table", type=Path, help="CSV in results/published.py's schema")
    table.add_argument("--families", nargs=2, default=["clip", "mammut"])
    table.add_argument("--benchmark", default="imagenet1k")
    table.add_argument("--dataset", default="datacomp_1b")
    table.add_argument("--schedule", default="cosine")
    table.add_argument("--fit-below", type=float, default=None,
                       help="fit only frontier points up to this training compute (FLOPs); predict the rest")
    table.add_argument("--holdout", type=int, default=2, help="without --fit-below: largest frontier points "
                       "held out")
    table.add_argument("--onset-error", type=float, default=None,
                       help="fit only points with error below this (points); default: no onset rule")
    args = parser.parse_args(argv)
    try:
        if args.table is not None:
            if args.out is None:
                raise ReportInputError("--table needs --out DIR (the report folder)")
            data = collect_table(args.table, args.families, args.benchmark, args.dataset, args.schedule)
            result = fitted_report(data, args.out, f"Scaling laws: {' vs '.join(sorted(args.families))} "
                                   f"({args.dataset}, {args.schedule}, {args.benchmark})",
                                   METRIC_NAMES.get(args.benchmark, f"{args.benchmark} error"),
                                   table_lines(data, args.table, args), holdout=args.holdout,
                                   bootstrap=1000 if args.bootstrap is None else args.bootstrap,
                                   onset_error=args.onset_error, fit_below=args.fit_below)
        else:
            spec = load_spec(args.spec)
            out = args.out or Path("results/scaling")
            result = write_scaling_report(spec, target(spec, args.target), out, args.bootstrap, args.partial)
    except (SpecError, ReportInputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result["verdict"])
    print(f"wrote {result['report_md']}")
    return 0


if __name__ == "__main__":
    run_main(main)
