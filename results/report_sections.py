"""The sections of the comparison report (results/report.py), each added to a results.document.Document:
the opening (title, primary endpoint, one sentence per arm), the headline with samples to accuracy, the
verdicts, the factorial 2x2s, the recipe (shared, or each arm's own under ``--recipe-per-arm``) and the
figures, which it also draws.

    doc = Document(); opening(doc, title_for(arms), ...); headline_section(doc, table, arms, crossings)

Reads nothing itself; used by ``python -m results.report``.
"""

from __future__ import annotations

from pathlib import Path

from results import endpoints, factorial, figures, samples_to_accuracy, tables, verdict_text
from results.document import Document

TUNING_TABLES = "results/tuning/tuning.md"  # where each arm's recipe was chosen (--recipe-per-arm)
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


def draw_figures(arms: list, scores: list, out: Path) -> tuple[dict[str, Path], dict[str, str]]:
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


def title_for(arms: list) -> str:
    if len(arms) == 2:
        return f"mixclip-bench: {arms[1].label} vs {arms[0].label}"
    if len(arms) == 1:
        return f"mixclip-bench: {arms[0].label}"
    return f"mixclip-bench: {len(arms)} arms against {arms[0].label}"


def opening(doc: Document, title: str, anchor_warnings: list[str], warnings: list[str], runs: list,
             arms: list, verdicts: list, correction: str, per_arm: bool) -> None:
    doc.add("h1", title)
    for warning in anchor_warnings:  # a baseline under open CLIP: read this before any comparison
        doc.add("warning", warning)
    doc.add("lead", verdict_text.primary_sentence(verdicts, tables.arm_columns(arms)))
    for warning in warnings:  # before the sentence that a warning qualifies
        doc.add("warning", warning)
    summary = verdict_text.summary_sentence(verdicts, correction, tables.arm_columns(arms))
    doc.add("p", f"In one sentence: {summary}")
    columns = tables.arm_columns(arms)
    doc.add("p", f"{len(runs)} runs in {len(arms)} arms; the first arm is the baseline every other arm is "
                 "compared with." + (f" Each arm ran its own tuned recipe (Recipe, below; {TUNING_TABLES})."
                                     if per_arm else ""))
    if any(column != label for label, column in columns.items()):
        doc.add("list", [f"{columns[arm.label]}: {arm.label}, seeds {', '.join(map(str, arm.seeds))}"
                         for arm in arms])


def headline_section(doc: Document, headline_table, arms: list, crossings: list) -> None:
    doc.add("h2", "Headline (mean ± std over seeds)")
    doc.add("p", "Toy numbers are each run's final in-training evaluation; benchmark numbers come from score "
                 "files. std is the sample standard deviation over seeds (ddof=1); (n=k) marks metrics that "
                 "fewer seeds have; [low, high] is the 95% interval of the arm's mean (one seed: its "
                 "bootstrap over evaluation images). Params, FLOPs and benchmark throughput describe the "
                 "architecture, one value per arm. Every number: headline.csv.")
    doc.add("table", headline_table)
    samples_to_accuracy.add_to_headline(doc, arms, crossings, tables.arm_columns(arms))


def significance_section(doc: Document, verdicts: list, correction: str, primary: str | None,
                          tags: dict[str, str]) -> None:
    doc.add("h2", "Is the difference real, and does it matter?")
    rule = endpoints.rule(primary) if primary else None
    doc.add("p", f"Each arm against the first. Primary endpoint: {rule.short if rule else 'none'}, tested at "
                 "0.05 (Holm across arms when several are compared). Secondary metrics: p-values "
                 f"corrected as one family ({verdict_text.CORRECTION_NAMES[correction]}); the interval "
                 "shown is the unadjusted 95% interval. Intervals: paired t over the seeds both arms ran, "
                 "else Welch t; with one seed per arm only the evaluation images' bootstrap, so no verdict "
                 "unless a seed spread is given (--seed-sd). better / worse: significant and at least the "
                 "minimum difference of practical interest (1 point of accuracy or STS, 0.05 nats of "
                 "loss); negligible: significant but smaller; equivalent: the interval inside +- that "
                 "minimum; inconclusive: neither. No word on diagnostics (blind priors, bag-of-words, the "
                 f"last training loss), on metrics where both arms are within {endpoints.CEILING_MARGIN:g} "
                 "points of 100%, or on throughput not timed under the same conditions. Every number, "
                 "p-values and seeds needed included: verdicts.csv.")
    if verdicts:
        doc.add("table", verdict_text.verdict_frame(verdicts, correction, tags))


def factorial_section(doc: Document, arms: list, scores: list):
    """The text-tower 2x2's effects, when the arms form one; returns its table (empty otherwise)."""
    factorial_table = factorial.effects_frame(arms, scores)
    if not factorial_table.empty:
        doc.add("h2", "Factorial analysis: the tower 2x2s (image family, text family, text mask)")
        doc.add("p", factorial.METHOD)
        doc.add("table", factorial_table)
    return factorial_table


def recipe_section(doc: Document, runs: list, differing: list[str], mixed: bool, arms: list,
                    per_arm: bool) -> None:
    doc.add("h2", "Recipe")
    if per_arm:
        doc.add("p", "Each arm ran its own tuned recipe, the best of an equal tuning search per arm (the "
                     f"tuning tables: {TUNING_TABLES}); within an arm only the seed differs. The part every "
                     "run shares, then each arm's recipe: its sha256 with the seed left out (config.json's "
                     "recipe_identity as canonical JSON; each run's recipe_sha256: provenance_runs.csv) and "
                     "the fields where the arms differ.")
        doc.add("table", tables.recipe_frame(runs, differing, per_arm=True))
        doc.add("table", tables.arm_recipes_frame(arms, differing))
        return
    doc.add("p", "Every run was trained with this recipe; only the seed differs between replicates."
            if not mixed else "The recipe; fields marked DIFFERS are not shared (--allow-mixed).")
    doc.add("table", tables.recipe_frame(runs, differing))


def figures_section(doc: Document, written: dict, skipped: dict) -> None:
    doc.add("h2", "Figures")
    for name, (section, caption) in FIGURES.items():
        if name in written:
            doc.add("figure", (name, f"{section}. {caption}"))
        else:
            doc.add("p", f"{section}: not drawn ({skipped[name]}).")
