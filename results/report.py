"""The comparison report: tables and figures from training runs and benchmark scores, as Markdown and HTML.

    python -m results.report runs/mixer-s0 runs/mixer-s1 runs/transformer-s0 runs/transformer-s1 \\
        --scores results/scores --out reports/mixer-vs-transformer

Runs that differ only in the recipe's seed are replicates of one arm (tower pair); the headline shows
mean +- std over seeds. Runs trained with different recipes are refused (exit status 2, one line naming
the fields) unless ``--allow-mixed``, which adds a warning banner and keeps differently trained runs in
separate arms. Writes ``report.md``, ``report.html``, ``headline.csv`` and the PNG figures into ``--out``.
From Python: ``write_report(run_dirs, scores_dir, out_dir)`` returns the paths and the headline table.
Reads files only (pandas, matplotlib); no model code.
"""

from __future__ import annotations

import argparse
import html
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from results import baselines, factorial, figures, significance, tables
from results.runs import (
    ReportInputError,
    duplicate_seed_notes,
    group_arms,
    load_runs,
    recipe_differences,
    refusal_message,
)
from results.runs import describe_differences as describe
from results.scores import add_checkpoint_evals, assign, load_scores

DEFAULT_SCORES = Path("results/scores")
FIGURES = {  # file name -> (section title, caption)
    "loss_vs_samples.png": ("Training loss", "Contrastive training loss against samples seen; the dashed "
                            "line is an untrained model's loss, ln(global batch size)."),
    "top1_vs_samples.png": ("Zero-shot top-1 vs samples seen", "Toy and ImageNet zero-shot top-1 of the "
                            "evaluations made during training (--eval-every, --imagenet-val) or of the saved "
                            "steps (--every-checkpoint), against samples seen; one panel per set."),
    "top1_vs_flops.png": ("Zero-shot top-1 vs training compute", "The same evaluations against training "
                          "FLOPs = samples seen x train GFLOPs per sample (3 x forward) x 1e9."),
    "attributes_vs_samples.png": ("Colour and shape accuracy", "Share of toy evaluation images whose "
                                  "predicted class has the right colour (left) or shape (right)."),
    "sts_per_set.png": ("STS per set", "Spearman correlation of cosine similarity with the gold scores "
                        "(x100, MTEB's main score) per STS set and the two averages."),
    "cost.png": ("Cost: throughput, parameters, FLOPs", "Samples per second (training step and inference), "
                 "parameters and forward GFLOPs per sample, image tower solid and text tower hatched."),
}


class Document:
    """Blocks rendered twice: to Markdown and to HTML (tables from DataFrames, figures as images)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def add(self, kind: str, content: Any) -> None:
        self.blocks.append((kind, content))

    def markdown(self) -> str:
        parts = []
        for kind, content in self.blocks:
            if kind in ("h1", "h2"):
                parts.append(("# " if kind == "h1" else "## ") + content)
            elif kind == "p":
                parts.append(content)
            elif kind == "warning":
                parts.append(f"> **WARNING:** {content}")
            elif kind == "list":
                parts.append("\n".join(f"- {item}" for item in content))
            elif kind == "code":
                parts.append(f"```\n{content}\n```")
            elif kind == "table":
                parts.append(tables.markdown_table(content))
            elif kind == "figure":
                parts.append(f"![{content[1]}]({content[0]})\n\n*{content[1]}*")
        return "\n\n".join(parts) + "\n"

    def html(self, title: str) -> str:
        parts = []
        for kind, content in self.blocks:
            if kind in ("h1", "h2"):
                parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
            elif kind == "p":
                parts.append(f"<p>{html.escape(content)}</p>")
            elif kind == "warning":
                parts.append(f'<div class="warning"><strong>WARNING:</strong> {html.escape(content)}</div>')
            elif kind == "list":
                parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in content) + "</ul>")
            elif kind == "code":
                parts.append(f"<pre>{html.escape(content)}</pre>")
            elif kind == "table":
                parts.append(content.to_html(index=False, border=0, na_rep=tables.MISSING, escape=True))
            elif kind == "figure":
                name, caption = (html.escape(part) for part in content)
                parts.append(f'<figure><img src="{name}" alt="{caption}">'
                             f"<figcaption>{caption}</figcaption></figure>")
        style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;line-height:1.4}"
                 "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
                 "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f2f2f2}"
                 "img{max-width:100%}figcaption{font-style:italic;color:#444}"
                 ".warning{background:#fff3cd;border:2px solid #d39e00;padding:0.8em;margin:1em 0}"
                 "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}")
        return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")


def _figures(arms: list, scores: list, out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    colours = figures.arm_colours(arms)
    makers = {
        "loss_vs_samples.png": lambda p: figures.loss_figure(arms, colours, p),
        "top1_vs_samples.png": lambda p: figures.top1_figure(arms, colours, p, "samples"),
        "top1_vs_flops.png": lambda p: figures.top1_figure(arms, colours, p, "flops"),
        "attributes_vs_samples.png": lambda p: figures.attributes_figure(arms, colours, p),
        "sts_per_set.png": lambda p: figures.sts_figure(arms, colours, scores, p),
        "cost.png": lambda p: figures.cost_figure(arms, colours, scores, p),
    }
    written, skipped = {}, {}
    for name, make in makers.items():
        path = out / name
        path.unlink(missing_ok=True)  # never leave a stale figure from an earlier report
        try:
            written[name] = make(path)
        except figures.FigureSkipped as exc:
            skipped[name] = str(exc)
    return written, skipped


def command_for(run_dirs: list[str], scores_dir: str | Path | None, out_dir: str | Path,
                allow_mixed: bool) -> str:
    argv = ["python", "-m", "results.report", *run_dirs]
    if scores_dir is not None:
        argv += ["--scores", str(scores_dir)]
    argv += ["--out", str(out_dir)] + (["--allow-mixed"] if allow_mixed else [])
    return " ".join(shlex.quote(arg) for arg in argv)


def _opening(doc: Document, title: str, warnings: list[str], runs: list, arms: list, command: str) -> None:
    doc.add("h1", title)
    for warning in warnings:
        doc.add("warning", warning)
    doc.add("p", f"{len(runs)} runs in {len(arms)} arms. Regenerate with:")
    doc.add("code", command)


def _headline_section(doc: Document, headline_table) -> None:
    doc.add("h2", "Headline (mean ± std over seeds)")
    doc.add("p", "Toy numbers are each run's final in-training evaluation; benchmark numbers come from score "
                 "files. std is the sample standard deviation over seeds (ddof=1); (n=k) marks metrics that "
                 "fewer seeds have. Params, FLOPs and benchmark throughput describe the architecture, one "
                 "value per arm.")
    doc.add("table", headline_table)


def _significance_section(doc: Document, verdicts: list) -> None:
    doc.add("h2", "Is the difference real?")
    doc.add("p", "Each arm against the first, metric by metric: with several seeds on both sides, the "
                 "difference of the seed means and its 95% Welch t interval; with one seed, the two "
                 "runs' bootstrap 95% CIs (disjoint: a real difference). better / worse: the interval "
                 "excludes 0 (lower is better for the loss); tie: it does not.")
    if verdicts:
        doc.add("table", significance.verdict_frame(verdicts))
    doc.add("p", f"In one sentence: {significance.summary_sentence(verdicts)}")


def _factorial_section(doc: Document, arms: list, scores: list):
    """The text-tower 2x2's effects, when the arms form one; returns its table (empty otherwise)."""
    factorial_table = factorial.effects_frame(arms, scores)
    if not factorial_table.empty:
        doc.add("h2", "Factorial analysis: the tower 2x2s (image family, text family, text mask)")
        doc.add("p", factorial.METHOD)
        doc.add("table", factorial_table)
    return factorial_table


def _recipe_section(doc: Document, runs: list, differing: list[str], mixed: bool) -> None:
    doc.add("h2", "Recipe")
    doc.add("p", "Every run was trained with this recipe; only the seed differs between replicates."
            if not mixed else "The recipe; fields marked DIFFERS are not shared (--allow-mixed).")
    doc.add("table", tables.recipe_frame(runs, differing))


def _figures_section(doc: Document, written: dict, skipped: dict) -> None:
    doc.add("h2", "Figures")
    for name, (section, caption) in FIGURES.items():
        if name in written:
            doc.add("figure", (name, f"{section}. {caption}"))
        else:
            doc.add("p", f"{section}: not drawn ({skipped[name]}).")


def _runs_and_scores_sections(doc: Document, runs: list, arms: list, scores) -> None:
    provenance_runs, provenance_scores = tables.provenance_frames(runs, scores)
    doc.add("h2", "Runs")
    doc.add("table", tables.runs_frame(arms))
    doc.add("h2", "Every score")
    doc.add("p", "Each number with its 95% confidence interval where the benchmark computes one (bootstrap "
                 "of top-1 over the evaluation images), the number of items n, and the file it comes from.")
    doc.add("table", tables.scores_frame(runs, scores))
    doc.add("h2", "Provenance")
    doc.add("p", "Runs: the recipe hash and code commit that trained them.")
    doc.add("table", provenance_runs)
    doc.add("p", "Score files: which run each belongs to, and whether the report uses it.")
    doc.add("table", provenance_scores)


def write_report(run_dirs: list[str | Path], scores_dir: str | Path | None, out_dir: str | Path,
                 allow_mixed: bool = False, scores_required: bool = True) -> dict[str, Any]:
    """Write the report; returns {"report_md", "report_html", "headline_csv": Path, "figures": {name: Path},
    "skipped_figures": {name: reason}, "headline": numeric DataFrame (index arm; ``<metric>_mean/_std/_n``),
    "verdicts": [significance.Verdict], "summary": the verdicts in one sentence,
    "headline_table": the DataFrame as printed, "warnings": [str]}.

    Raises :class:`ReportInputError` (one line) on unreadable input or, without ``allow_mixed``, on runs
    trained with different recipes."""
    labels = [str(run_dir) for run_dir in run_dirs]
    if not labels:
        raise ReportInputError("no run folders given; expected at least one runs/<name>/")
    runs = load_runs(labels)
    differences = recipe_differences(runs)
    warnings = []
    if differences:
        if not allow_mixed:
            raise ReportInputError(refusal_message(differences))
        warnings.append("these runs were trained with different recipes; differing fields: "
                        f"{describe(differences)}. Differences between arms may come from the recipe, "
                        "not the towers.")
    differing = [name for name in differences if name != "recipe_sha256"]
    arms = group_arms(runs, differing)
    scores = load_scores(scores_dir, required=scores_required)
    notes = duplicate_seed_notes(arms) + assign(scores, runs, arms) + tables.throughput_notes(arms, scores)
    add_checkpoint_evals(scores, runs)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = _figures(arms, scores, out)
    headline = tables.headline_frame(arms, scores)
    headline_table = tables.headline_display(headline, arms)
    headline.to_csv(out / "headline.csv")

    doc = Document()
    title = "mixclip-bench comparison: " + " vs ".join(arm.label for arm in arms)
    _opening(doc, title, warnings, runs, arms, command_for(labels, scores_dir, out_dir, allow_mixed))
    _headline_section(doc, headline_table)
    baselines.add_section(doc, arms, scores)
    verdicts = significance.compare_arms(arms, scores)
    if len(arms) > 1:
        _significance_section(doc, verdicts)
    factorial_table = _factorial_section(doc, arms, scores)
    cautions = tables.subset_notes(scores)
    for caution in cautions:
        doc.add("p", f"Caution: {caution}.")
    _recipe_section(doc, runs, differing, bool(differences))
    _figures_section(doc, written, skipped)
    _runs_and_scores_sections(doc, runs, arms, scores)
    all_notes = notes + [f"{name}: {reason}" for name, reason in skipped.items()]
    if all_notes:
        doc.add("h2", "Notes")
        doc.add("list", all_notes)

    report_md, report_html = out / "report.md", out / "report.html"
    report_md.write_text(doc.markdown(), encoding="utf-8")
    report_html.write_text(doc.html(title), encoding="utf-8")
    return {"report_md": report_md, "report_html": report_html, "headline_csv": out / "headline.csv",
            "figures": written, "skipped_figures": skipped, "headline": headline, "verdicts": verdicts,
            "summary": significance.summary_sentence(verdicts),
            "headline_table": headline_table, "factorial": factorial_table,
            "warnings": warnings + cautions + notes}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m results.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run folders (runs/<name>/)")
    parser.add_argument("--scores", type=Path, default=None,
                        help="benchmark score folder, <dir>/<benchmark>/<model-id>.json "
                             f"(default: {DEFAULT_SCORES} if it exists)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for report.md, report.html, headline.csv and the PNGs")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare runs trained with different recipes anyway (adds a warning banner)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    scores_dir = args.scores if args.scores is not None else DEFAULT_SCORES
    try:
        result = write_report(args.run_dirs, scores_dir, args.out, allow_mixed=args.allow_mixed,
                              scores_required=args.scores is not None)
    except ReportInputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(result["summary"])
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(result["headline_table"].to_string(index=False))
    print(f"wrote {result['report_md']}, {result['report_html']} and {len(result['figures'])} figures "
          f"to {args.out}")
    return result


if __name__ == "__main__":
    main()
