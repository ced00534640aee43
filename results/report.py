"""The comparison report: tables and figures from training runs and benchmark scores, as Markdown and HTML.

    python -m results.report runs/mixer-s0 runs/mixer-s1 runs/transformer-s0 runs/transformer-s1 \\
        --scores results/scores --out reports/mixer-vs-transformer [--primary toy_top1_seen]

Runs that differ only in the recipe's seed are replicates of one arm (tower pair); ``--arm-per-run``
makes every run its own arm (two seeds of one tower: how far apart runs of one recipe land). Runs
trained with different recipes are refused (exit status 2, one line naming the fields) unless
``--allow-mixed``, which adds a warning banner and keeps differently trained runs in separate arms, or
``--recipe-per-arm`` (each arm at its own tuned recipe: arms by tower pair, one recipe up to the seed
within an arm, the recipe section states the shared part and each arm's own; no banner).
The report opens with the primary endpoint (``--primary``; default per recipe kind, results/endpoints.py)
and one sentence per compared arm; verdicts follow results/significance.py. The headline section
also shows samples to accuracy (results/samples_to_accuracy.py; a secondary measure, no verdict). Writes
``report.md``, ``report.html``, the PNG figures and the detail as CSV (headline, samples to accuracy,
verdicts, runs, scores, provenance) into ``--out``. From Python: ``write_report(run_dirs, scores_dir,
out_dir)`` returns the paths and tables. Reads files only (pandas, matplotlib); no model code.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from results import baselines, endpoints, samples_to_accuracy, significance, tables, verdict_text
from results import report_sections as sections
from results.anchors import report_anchors
from results.document import Document
from results.runs import (
    ReportInputError,
    duplicate_seed_notes,
    group_arms,
    load_runs,
    one_arm_per_run,
    recipe_differences,
    refusal_message,
)
from results.runs import describe_differences as describe
from results.scores import add_checkpoint_evals, assign, load_scores
from runfolder.errors import OneLineParser, run_main

DEFAULT_SCORES = Path("results/scores")


def command_for(run_dirs: list[str], scores_dir: str | Path | None, out_dir: str | Path,
                allow_mixed: bool, options: list[str] | None = None) -> str:
    """The command that regenerates the report, wrapped at 100 characters with shell continuations."""
    argv = ["python", "-m", "results.report", *run_dirs]
    # a default folder that does not exist was not read: naming it would make the command fail
    if scores_dir is not None and Path(scores_dir).is_dir():
        argv += ["--scores", str(scores_dir)]
    argv += ["--out", str(out_dir)] + (["--allow-mixed"] if allow_mixed else []) + (options or [])
    lines, line = [], ""
    for word in (shlex.quote(arg) for arg in argv):
        if line and len(line) + len(word) > 96:
            lines.append(line + " \\")
            line = "    "
        line += ("" if line.strip() == "" else " ") + word
    return "\n".join(lines + [line])


def _arms_of_own_recipes(runs: list) -> list:
    """--recipe-per-arm: arms by tower pair, each trained with one recipe up to the seed."""
    arms = group_arms(runs)
    for arm in arms:
        inside = recipe_differences(arm.runs)
        if inside:
            raise ReportInputError(f"--recipe-per-arm: the runs of arm {arm.label} were trained with "
                                   f"different recipes: {describe(inside)}; within an arm only the seed may "
                                   "differ")
    return arms


DETAIL_FILES = {  # file -> what it holds (the report links them instead of printing thousands of rows)
    "headline.csv": "every headline number per arm: mean, std, n and 95% interval per metric",
    "verdicts.csv": "every comparison: means, difference, interval, p, adjusted p, verdict, seeds needed",
    "samples_to_accuracy.csv": "per arm and threshold: runs that reached it, samples mean, sd, 95% interval "
                               "and the difference from the first arm with its Welch interval",
    "runs.csv": "one row per run: seed, length, training health, every final evaluation number and the "
                "samples at which it reached each threshold",
    "scores.csv": "every score of every benchmark with its 95% CI, n and source file",
    "provenance_runs.csv": "each run's recipe hash, code commit and config file",
    "provenance_scores.csv": "each score file: which run it belongs to and whether the report uses it",
}


def _write_details(out: Path, headline, verdicts: list, runs: list, arms: list, scores: list,
                   crossings: list) -> None:
    provenance_runs, provenance_scores = tables.provenance_frames(runs, scores)
    headline.to_csv(out / "headline.csv")
    verdict_text.verdicts_csv_frame(verdicts).to_csv(out / "verdicts.csv", index=False)
    samples_to_accuracy.csv_frame(crossings).to_csv(out / "samples_to_accuracy.csv", index=False)
    runs_table = tables.runs_frame(arms)
    if crossings:
        runs_table = runs_table.merge(samples_to_accuracy.runs_columns(arms), on="run", how="left")
    runs_table.to_csv(out / "runs.csv", index=False)
    tables.scores_frame(runs, scores).to_csv(out / "scores.csv", index=False)
    provenance_runs.to_csv(out / "provenance_runs.csv", index=False)
    provenance_scores.to_csv(out / "provenance_scores.csv", index=False)


def condense_notes(notes: list[str]) -> list[str]:
    """Notes with the many alike ones (a score file of each run not compared) counted in one line."""
    other = [note for note in notes if note.endswith("which is not one of the compared runs; left out")]
    kept = [note for note in notes if note not in other]
    if other:
        kept.insert(0, f"{len(other)} score files belong to runs that are not compared and are left out "
                       "(provenance_scores.csv lists them)")
    return kept


def _spread_from_runs(seed_runs: list[str | Path], runs: list, primary: str,
                      scores_dir: str | Path | None) -> significance.SeedSpread | None:
    """The primary's seed sd from other runs of the compared runs' recipe (--seed-sd-from)."""
    others = load_runs([str(run_dir) for run_dir in seed_runs])
    differences = recipe_differences(runs[:1] + others)
    if differences:
        raise ReportInputError(f"--seed-sd-from: {refusal_message(differences).split(';')[0]}; expected "
                               "other seeds of the compared runs' recipe")
    scores = load_scores(scores_dir)
    arms = group_arms(others)
    assign(scores, others, arms)
    spread = significance.spread_from_arms(arms, primary, scores)
    if spread is None:
        raise ReportInputError(f"--seed-sd-from: no arm has two runs with {primary}; expected at least "
                               "two seeds of one tower")
    return spread


def write_report(run_dirs: list[str | Path], scores_dir: str | Path | None, out_dir: str | Path,
                 allow_mixed: bool = False, scores_required: bool = True, primary: str | None = None,
                 correction: str = "holm", seed_spread: significance.SeedSpread | None = None,
                 min_differences: dict[str, float] | None = None, arm_per_run: bool = False,
                 options: list[str] | None = None, seed_runs: list[str | Path] | None = None,
                 recipe_per_arm: bool = False) -> dict[str, Any]:
    """Write the report; returns {"report_md", "report_html", "headline_csv": Path, "figures": {name: Path},
    "skipped_figures": {name: reason}, "headline": numeric DataFrame (index arm; ``<metric>_mean/_std/_n``),
    "verdicts": [significance.Verdict], "primary": the primary metric's key, "primary_sentence",
    "summary": the verdicts in one sentence per arm, "headline_table": the table as printed (metrics as
    rows, arms as columns), "warnings": [str], "notes": [str]}.

    ``primary`` defaults per recipe kind (endpoints.default_primary); ``seed_spread`` sets the primary's
    interval where an arm has one seed, or ``seed_runs`` (other seeds of the same recipe) estimates it;
    ``options`` are the CLI flags to repeat in the regenerate command. ``recipe_per_arm``: each arm (tower
    pair) may have its own recipe, one up to the seed within the arm.
    Raises :class:`ReportInputError` (one line) on unreadable input or, without ``allow_mixed`` or
    ``recipe_per_arm``, on runs trained with different recipes."""
    labels = [str(run_dir) for run_dir in run_dirs]
    if not labels:
        raise ReportInputError("no run folders given; expected at least one runs/<name>/")
    if recipe_per_arm and (allow_mixed or arm_per_run):
        raise ReportInputError("--recipe-per-arm groups runs by tower pair, one recipe per arm: not with "
                               "--allow-mixed or --arm-per-run")
    runs = load_runs(labels)
    differences = recipe_differences(runs)
    per_arm = recipe_per_arm and bool(differences)
    options = (options or []) + (["--recipe-per-arm"] if recipe_per_arm and "--recipe-per-arm" not in
                                 (options or []) else [])
    warnings = []
    if differences and not per_arm:
        if not allow_mixed:
            raise ReportInputError(refusal_message(differences))
        warnings.append("these runs were trained with different recipes; differing fields: "
                        f"{describe(differences)}. Differences between arms may come from the recipe, "
                        "not the towers.")
    differing = [name for name in differences if name != "recipe_sha256"]
    if per_arm:
        arms = _arms_of_own_recipes(runs)
    else:
        arms = one_arm_per_run(runs) if arm_per_run else group_arms(runs, differing)
    scores = load_scores(scores_dir, required=scores_required)
    notes = duplicate_seed_notes(arms) + assign(scores, runs, arms) + tables.throughput_notes(arms, scores)
    add_checkpoint_evals(scores, runs)
    primary = primary or endpoints.default_primary(runs)
    if primary is not None and endpoints.rule(primary) is None:
        raise ReportInputError(f"--primary {primary}: not a metric the report compares; expected one of "
                               f"{', '.join(endpoints.RULES)}")
    if seed_runs and primary is not None:
        seed_spread = _spread_from_runs(seed_runs, runs, primary, scores_dir) or seed_spread
    verdicts = significance.compare_arms(arms, scores, primary, correction, seed_spread, min_differences)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = sections.draw_figures(arms, scores, out)
    headline = tables.headline_frame(arms, scores)
    headline_table = tables.headline_display(headline, arms)
    crossings = samples_to_accuracy.summarise(arms)
    _write_details(out, headline, verdicts, runs, arms, scores, crossings)

    anchor_warnings, anchor_blocks = report_anchors(runs, out)  # a Transformer arm under open CLIP: first
    doc = Document()
    title = sections.title_for(arms)
    sections.opening(doc, title, anchor_warnings, warnings, runs, arms, verdicts, correction, per_arm)
    sections.headline_section(doc, headline_table, arms, crossings)
    baselines.add_section(doc, arms, scores)
    for block in anchor_blocks:
        doc.add(*block)
    if len(arms) > 1:
        sections.significance_section(doc, verdicts, correction, primary, tables.arm_columns(arms))
    factorial_table = sections.factorial_section(doc, arms, scores)
    cautions = tables.subset_notes(scores)
    for caution in cautions:
        doc.add("p", f"Caution: {caution}.")
    sections.recipe_section(doc, runs, differing, bool(differences), arms, per_arm)
    sections.figures_section(doc, written, skipped)
    doc.add("h2", "Detail files")
    doc.add("links", list(DETAIL_FILES.items()))
    all_notes = condense_notes(notes) + [f"{name}: {reason}" for name, reason in skipped.items()]
    if all_notes:
        doc.add("h2", "Notes")
        doc.add("list", all_notes)
    doc.add("h2", "Regenerate")
    doc.add("code", command_for(labels, scores_dir, out_dir, allow_mixed, options))

    report_md, report_html = out / "report.md", out / "report.html"
    report_md.write_text(doc.markdown(), encoding="utf-8")
    report_html.write_text(doc.html(title), encoding="utf-8")
    return {"report_md": report_md, "report_html": report_html, "headline_csv": out / "headline.csv",
            "figures": written, "skipped_figures": skipped, "headline": headline, "verdicts": verdicts,
            "primary": primary,
            "primary_sentence": verdict_text.primary_sentence(verdicts, tables.arm_columns(arms)),
            "summary": verdict_text.summary_sentence(verdicts, correction, tables.arm_columns(arms)),
            "headline_table": headline_table, "factorial": factorial_table, "samples_to_accuracy": crossings,
            "warnings": warnings + cautions + notes, "notes": all_notes, "banner": warnings + cautions}


def _seed_spread(args: argparse.Namespace, parser: argparse.ArgumentParser) -> significance.SeedSpread | None:
    if args.seed_sd is None:
        return None
    if args.seed_sd <= 0:
        parser.error(f"--seed-sd {args.seed_sd}: expected a positive standard deviation")
    if not args.seed_sd_source:
        parser.error("--seed-sd needs --seed-sd-source: say where the spread comes from (it is printed "
                     "beside every interval it sets)")
    return significance.SeedSpread(args.seed_sd, args.seed_sd_source, args.seed_sd_df)


def _min_differences(values: list[str], parser: argparse.ArgumentParser) -> dict[str, float]:
    found = {}
    for value in values:
        key, _, number = value.partition("=")
        try:
            found[key] = float(number)
        except ValueError:
            parser.error(f"--min-difference {value}: expected METRIC=NUMBER, e.g. imagenet_top1=0.5")
        if key not in endpoints.RULES:
            parser.error(f"--min-difference {value}: unknown metric {key}; expected one of "
                         f"{', '.join(endpoints.RULES)}")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m results.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run folders (runs/<name>/)")
    parser.add_argument("--scores", type=Path, default=None,
                        help="benchmark score folder, <dir>/<benchmark>/<model-id>.json "
                             f"(default: {DEFAULT_SCORES} if it exists)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for report.md, report.html, the CSV detail files and the PNGs")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare runs trained with different recipes anyway (adds a warning banner)")
    parser.add_argument("--primary", default=None, metavar="METRIC",
                        help="the comparison's primary endpoint, a headline key (default: imagenet_top1 "
                             "where runs have it, else toy_top1_seen, else toy_top1)")
    parser.add_argument("--correction", choices=significance.CORRECTIONS, default="holm",
                        help="multiplicity correction of the secondary metrics: holm (familywise, default), "
                             "bh (Benjamini-Hochberg false discovery rate) or none")
    parser.add_argument("--seed-sd", type=float, default=None, metavar="SD",
                        help="seed-to-seed sd of the primary metric, for arms with one seed (without it such "
                             "a comparison gets no verdict)")
    parser.add_argument("--seed-sd-from", nargs="+", default=None, metavar="RUN_DIR",
                        help="estimate that sd from these run folders: other seeds of the same recipe "
                             "(pooled within each tower pair; named in the report)")
    parser.add_argument("--seed-sd-source", default=None, metavar="TEXT",
                        help="where --seed-sd comes from, e.g. 'transformer seeds 10-22 of this recipe'")
    parser.add_argument("--seed-sd-df", type=int, default=None, metavar="DF",
                        help="degrees of freedom of --seed-sd (seeds it was estimated from minus 1); "
                             "default: taken as known (normal interval)")
    parser.add_argument("--min-difference", action="append", default=[], metavar="METRIC=VALUE",
                        help="smallest difference of practical interest for one metric (default per kind: "
                             "1 point of accuracy or STS, 0.05 nats of loss)")
    parser.add_argument("--recipe-per-arm", action="store_true",
                        help="each arm (tower pair) at its own recipe, e.g. each arm's tuned best; within "
                             "an arm only the seed may differ (the report states the shared part and each "
                             "arm's)")
    parser.add_argument("--arm-per-run", action="store_true",
                        help="every run folder is its own arm (e.g. two seeds of one tower)")
    return parser


def _repeated_options(argv: list[str]) -> list[str]:
    """The report options of a command line, to repeat in the report's regenerate command."""
    options, keep = [], False
    for arg in argv:
        name = arg.split("=")[0]
        if name.startswith("--"):
            keep = name in ("--primary", "--correction", "--seed-sd", "--seed-sd-source", "--seed-sd-df",
                            "--seed-sd-from",
                            "--min-difference", "--arm-per-run", "--recipe-per-arm")
            if keep:
                options.append(arg)
        elif keep:
            options.append(arg)
    return options


def _print(text: str) -> None:
    print(textwrap.fill(text, width=100, break_on_hyphens=False))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    scores_dir = args.scores if args.scores is not None else DEFAULT_SCORES
    try:
        result = write_report(args.run_dirs, scores_dir, args.out, allow_mixed=args.allow_mixed,
                              scores_required=args.scores is not None, primary=args.primary,
                              correction=args.correction, seed_spread=_seed_spread(args, parser),
                              min_differences=_min_differences(args.min_difference, parser),
                              arm_per_run=args.arm_per_run, options=_repeated_options(argv),
                              seed_runs=args.seed_sd_from, recipe_per_arm=args.recipe_per_arm)
    except ReportInputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in result["banner"]:
        print(textwrap.fill(f"warning: {warning}", width=100, break_on_hyphens=False), file=sys.stderr)
    if result["notes"]:
        count = len(result["notes"])
        print(f"{count} note{'s' if count > 1 else ''} (score files left out, figures not drawn): see "
              "Notes in report.md", file=sys.stderr)
    _print(result["primary_sentence"])
    _print(result["summary"])
    table = result["headline_table"]
    width = int(table["metric"].str.len().max())
    text = table.to_string(index=False, formatters={"metric": lambda cell: f"{cell:<{width}}"},
                           justify="left")
    if max(len(line) for line in text.splitlines()) <= 120:  # wider (many arms): the report has it
        print(text)
    print(f"wrote report.md, report.html, {len(result['figures'])} figures and the CSV detail to {args.out}")
    return result


if __name__ == "__main__":
    run_main(main)
