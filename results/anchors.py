"""The report's anchors section: each run against the published curve of its model and data (the rule and
its margin: runfolder.anchor), as lines, a table and a figure of the published error-vs-compute curves.

    from results.anchors import report_anchors
    lines, figures = report_anchors(runs, out)
"""

from __future__ import annotations

from pathlib import Path

from runfolder.anchor import (  # noqa: F401 - re-exported: a run's anchor lives on the torch-free floor
    DATA_WORDS,
    MARGIN_POINTS,
    MARGIN_SHARE,
    Anchor,
    anchor_run,
    anchor_run_dir,
    data_name,
    end_of_run_line,
    margin_for,
)
from runfolder.published_table import PACKAGED, load_table, select


def anchor_figure(anchors: list[Anchor], computes: dict[str, float], path: Path, dataset: str = "datacomp_1b",
                  table: Path = PACKAGED) -> Path:
    """The published CLIP error-vs-compute curves (one line per model size on `dataset`, training FLOPs
    = 3 x forward) and each anchored run (its error at its compute, `computes`: run -> training FLOPs)."""
    from results.figures import _save, plt

    rows = select(load_table(table), family="clip", dataset=dataset, benchmark="imagenet1k",
                  schedule="cosine")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for model in sorted({r.model for r in rows}, key=lambda m: min(r.gflops_per_sample or 0 for r in rows
                                                                    if r.model == m)):
        ordered = sorted((r for r in rows if r.model == model and r.train_flops),
                         key=lambda r: r.samples_seen)
        ax.plot([r.train_flops for r in ordered], [100 - r.value for r in ordered], lw=0.9, alpha=0.6,
                marker=".", ms=3, label=model)
    placed = [a for a in anchors if a.score is not None and a.run in computes]
    for a in placed:
        ax.scatter([computes[a.run]], [100 - a.score], marker="*", s=120, zorder=5,
                   color="#d62728" if a.flagged else "#222222")
        ax.annotate(a.run, (computes[a.run], 100 - a.score), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("training compute (FLOPs, 3 x forward)")
    ax.set_ylabel("ImageNet zero-shot top-1 error (points)")
    ax.set_title(f"open CLIP on {dataset} (Nezhurina et al. 2025); stars: runs"
                 + ("" if placed else " (none of these runs has an ImageNet score)"), fontsize=9)
    ax.legend(fontsize=6, ncol=3)
    return _save(fig, path)


def anchor_rows(anchors: list[Anchor]) -> list[dict[str, str]]:
    """One row per run: its score, the published value at its samples seen, the gap, the verdict."""
    rows = []
    for a in anchors:
        anchored = a.published is not None and a.score is not None
        rows.append({"run": a.run, "ImageNet top-1": "-" if a.score is None else f"{a.score:.1f}",
                     "published at its samples seen": f"{a.published:.1f} ({a.curve}, {a.samples_seen:,})"
                     if anchored else "-",
                     "published minus run": f"{a.gap:+.1f}" if anchored else "-",
                     "anchor": (f"{'FLAGGED' if a.flagged else 'within'} {a.margin:.1f}" if anchored
                                else f"none: {a.reason}")})
    return rows


def anchor_lines(anchors: list[Anchor]) -> list[str]:
    """Markdown: a warning line per flagged run, then a table of every run's anchor."""
    rows = anchor_rows(anchors)
    lines = [f"> **{a.summary()}**" for a in anchors if a.flagged]
    lines += ["", "| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"] if rows else []
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    return lines + [""]


def report_anchors(runs: list, out: Path) -> tuple[list[str], list[tuple[str, object]]]:
    """For results.report: the warnings its opening lists (one per flagged run) and its blocks (kind,
    content): a section with every run's anchor and, when a run is anchored, the figure (out/anchors.png).
    `runs`: results.runs.Run objects; the score is the run's final in-training ImageNet top-1."""
    anchors = [anchor_run(run.config, run.final_eval.get("imagenet_top1")) for run in runs]  # Run: no eval/
    import pandas as pd

    blocks: list[tuple[str, object]] = [("h2", "Anchors: each run against published open CLIP runs")]
    placed = [a for a in anchors if a.published is not None]
    if placed:
        blocks.append(("table", pd.DataFrame(anchor_rows(anchors))))
    else:  # one line, not a row per run, when nothing can be anchored (every toy report)
        reasons = sorted({a.reason for a in anchors})
        blocks.append(("p", f"No run of the {len(anchors)} has a published counterpart: "
                            + "; ".join(reasons) + "."))
    if placed:
        computes = {run.config.get("name", "run"): run.train_gflops * 1e9 * a.samples_seen
                    for run, a in zip(runs, anchors, strict=True)}
        path = anchor_figure(anchors, computes, out / "anchors.png", dataset=placed[0].dataset)
        blocks.append(("figure", (path.name, "runs (stars) on the published error-vs-compute curves")))
    return [a.warning() for a in anchors if a.flagged], blocks
