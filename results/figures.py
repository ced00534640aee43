"""The report's matplotlib figures (Agg backend, PNG): training curves, zero-shot accuracy against samples
seen and against training compute, STS per set, and cost (throughput, parameters, FLOPs per sample).

Each arm (seed replicates of one tower pair) is one colour in every figure: its mean over seeds as a
line, with a band from the lowest to the highest seed (or each seed's bars as dots). Every function
returns the PNG it wrote, or raises :class:`FigureSkipped` saying which data is absent.
Used by ``python -m results.report``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from results.runs import Arm  # noqa: E402
from results.scores import Score, arm_throughput, own_row, run_score  # noqa: E402
from results.tables import arm_columns  # noqa: E402

DPI = 110
REFERENCE_GREYS = ("#555555", "#8c8c8c", "#b5b5b5", "#d0d0d0")
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
                     "axes.grid": True, "grid.alpha": 0.3})


class FigureSkipped(Exception):
    """The figure's data is absent; the message says what is missing."""


def arm_colours(arms: list[Arm]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {arm.label: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, arm in enumerate(arms)}


def legend_name(arms: list[Arm], arm: Arm) -> str:
    """The arm as the legend names it: with its tag (A1: ...) where the report's tables use tags."""
    tag = arm_columns(arms)[arm.label]
    return arm.label if tag == arm.label else f"{tag}: {arm.label}"


def _count(value: float, _position: object = None) -> str:
    """25k, 1.2M: axis ticks for sample counts."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _flop_unit(max_flops: float) -> tuple[float, str]:
    for exponent, name in ((18, "EFLOP"), (15, "PFLOP"), (12, "TFLOP"), (9, "GFLOP")):
        if max_flops >= 10.0 ** exponent:
            return 10.0 ** exponent, f"{name} = 10^{exponent} FLOPs"
    return 1.0, "FLOPs"


def _save(fig: plt.Figure, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


LEGEND_ROW_INCHES = 0.24  # one legend row at legend.fontsize 10, with its spacing


def _legend_below(fig: plt.Figure, path: Path, handles: list, labels: list[str], title: str | None = None,
                  columns: int | None = None) -> Path:
    """Save the figure with one legend under its axes (never over the curves or bars): the figure grows
    by the legend's height, its width stays, so panels keep their size whatever the arm count."""
    width, height = fig.get_size_inches()
    longest = max((len(label) for label in labels), default=1)
    # about 0.085 inch per character at font size 10, plus the handle
    columns = columns or max(1, min(len(labels), int(width // (longest * 0.085 + 0.8))))
    rows = -(-len(labels) // columns)
    extra = rows * LEGEND_ROW_INCHES + (0.3 if title else 0) + 0.2
    fig.set_size_inches(width, height + extra)
    fig.legend(handles, labels, loc="lower center", ncol=columns, frameon=False, title=title,
               title_fontsize=10)
    return _save(fig, path, rect=(0, extra / (height + extra), 1, 1))


def _unique_handles(axes) -> tuple[list, list[str]]:
    handles, labels = [], []
    for ax in np.atleast_1d(axes).ravel():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels


def seed_curves(arm: Arm, frame_of: str, column: str) -> pd.DataFrame:
    """Samples seen x runs: ``column`` of each seed (``frame_of``: "train" or "evals"), NaN where a seed
    did not log that point."""
    series = {}
    for run in arm.runs:
        frame = getattr(run, frame_of)
        if column in frame.columns and not frame[column].dropna().empty:
            data = frame.dropna(subset=[column])
            series[run.label] = pd.Series(data[column].to_numpy(float),
                                          index=data["samples_seen"].to_numpy(float))
    return pd.DataFrame(series).sort_index()


def _draw_arm(ax: plt.Axes, curves: pd.DataFrame, colour: str, label: str, x_scale: float = 1.0,
              marker: str | None = None) -> None:
    """Mean line with a min-max band where every seed has a point; each seed thinly if they never align."""
    complete = curves.dropna()
    if len(curves.columns) > 1 and len(complete) >= 2:
        x = complete.index.to_numpy() * x_scale
        ax.plot(x, complete.mean(axis=1), color=colour, lw=2, marker=marker, ms=4,
                label=f"{label} ({len(curves.columns)} seeds)")
        ax.fill_between(x, complete.min(axis=1), complete.max(axis=1), color=colour, alpha=0.2, lw=0)
    else:
        for i, column in enumerate(curves.columns):
            seed = curves[column].dropna()
            name = label if len(curves.columns) == 1 else f"{label} (each seed)"
            ax.plot(seed.index.to_numpy() * x_scale, seed.to_numpy(), color=colour, lw=1.5, marker=marker,
                    ms=4, label=name if i == 0 else None)


def loss_figure(arms: list[Arm], colours: dict[str, str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in arms:
        _draw_arm(ax, seed_curves(arm, "train", "loss"), colours[arm.label], legend_name(arms, arm))
    batches = {run.config.get("global_batch_size") for arm in arms for run in arm.runs}
    if len(batches) == 1 and isinstance(next(iter(batches)), int):
        batch = next(iter(batches))  # an untrained model's contrastive loss: ln(batch size)
        ax.axhline(np.log(batch), color="black", ls="--", lw=1,
                   label=f"chance: ln({batch}) = {np.log(batch):.2f}")
    ax.set_xlabel("samples seen")
    ax.set_ylabel("contrastive training loss (nats)")
    ax.set_title("Training loss")
    ax.xaxis.set_major_formatter(FuncFormatter(_count))
    return _legend_below(fig, path, *_unique_handles(ax), title="line: mean over seeds; band: min-max")


def _eval_arms(arms: list[Arm], column: str) -> list[Arm]:
    return [arm for arm in arms if any(column in run.evals.columns for run in arm.runs)]


# eval column, panel name; a panel is drawn for each column any arm has (toy v4 runs: toy_top1 only)
ZERO_SHOT_SETS = (("toy_top1_seen", "toy (seen classes)"), ("toy_top1_held_out", "toy (held-out classes)"),
                  ("toy_top1", "toy"), ("imagenet_top1", "ImageNet"))


def top1_figure(arms: list[Arm], colours: dict[str, str], path: Path, against: str) -> Path:
    """Zero-shot top-1 of the evaluations (in training, or of saved steps) against samples seen or
    training FLOPs: one panel per evaluation set that any arm has (toy, ImageNet)."""
    panels = [(column, name, _eval_arms(arms, column)) for column, name in ZERO_SHOT_SETS]
    panels = [panel for panel in panels if panel[2]]
    if any(column == "toy_top1_seen" for column, _, _ in panels):  # v5: seen / held-out say more than all
        panels = [panel for panel in panels if panel[0] != "toy_top1"]
    if not panels:
        raise FigureSkipped("no evaluation lines (eval/toy_top1 or eval/imagenet_top1) in any metrics.jsonl "
                            "and no per-step zero-shot scores: train with --eval-every")
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 5), squeeze=False)
    if against == "flops":
        max_flops = max(arm.first.train_gflops * 1e9 * run.evals["samples_seen"].max()
                        for _, _, with_evals in panels for arm in with_evals for run in arm.runs
                        if not run.evals.empty)
        scale, unit = _flop_unit(max_flops)
    for ax, (column, name, with_evals) in zip(axes[0], panels, strict=True):
        for arm in with_evals:
            curves = seed_curves(arm, "evals", column)
            x_scale = arm.first.train_gflops * 1e9 / scale if against == "flops" else 1.0
            _draw_arm(ax, curves, colours[arm.label], legend_name(arms, arm), x_scale=x_scale, marker="o")
        if against == "flops":
            ax.set_xlabel(f"training compute ({unit}; 3 x forward FLOPs per sample)")
            ax.set_title(f"{name} zero-shot top-1 vs compute")
        else:
            ax.set_xlabel("samples seen")
            ax.xaxis.set_major_formatter(FuncFormatter(_count))
            ax.set_title(f"{name} zero-shot top-1 vs samples seen")
        ax.set_ylabel("zero-shot top-1 (%)")
        ax.set_ylim(bottom=0)
    return _legend_below(fig, path, *_unique_handles(axes), title="line: mean over seeds; band: min-max")


def attributes_figure(arms: list[Arm], colours: dict[str, str], path: Path) -> Path:
    """Colour and shape accuracy of the toy evaluations: which attribute the model has learned."""
    with_evals = _eval_arms(arms, "toy_shape_acc")
    if not with_evals:
        raise FigureSkipped("no per-attribute evaluations (eval/toy_colour_acc, eval/toy_shape_acc)")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, column, name in ((axes[0], "toy_colour_acc", "colour"), (axes[1], "toy_shape_acc", "shape")):
        for arm in with_evals:
            _draw_arm(ax, seed_curves(arm, "evals", column), colours[arm.label], legend_name(arms, arm),
                      marker="o")
        ax.axhline(12.5, color="black", ls="--", lw=1, label="chance (1 of 8): 12.5%")
        ax.set_title(f"predicted class has the right {name}")
        ax.set_xlabel("samples seen")
        ax.xaxis.set_major_formatter(FuncFormatter(_count))
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("toy attribute accuracy (%)")
    return _legend_below(fig, path, *_unique_handles(axes))


def sts_figure(arms: list[Arm], colours: dict[str, str], scores: list[Score], path: Path) -> Path:
    """Grouped bars: STS sets and the two averages; arms (mean, std whisker, each seed a dot), references."""
    series: list[tuple[str, str, list[dict]]] = []  # (label, colour, per-seed metrics)
    for arm in arms:
        per_seed = [score.metrics for run in arm.runs if (score := run_score(scores, run, "sts")) is not None]
        if per_seed:
            series.append((legend_name(arms, arm), colours[arm.label], per_seed))
    references = [score for score in scores if score.benchmark == "sts" and score.status == "reference"]
    for i, score in enumerate(references):
        grey = REFERENCE_GREYS[i % len(REFERENCE_GREYS)]
        series.append((f"{score.model_id} (reference)", grey, [score.metrics]))
    if not series:
        raise FigureSkipped("no STS scores (run python -m benchmarks.sts --model RUN_DIR)")
    sets = list(dict.fromkeys(name for _, _, seeds in series for m in seeds for name in m.get("sets", {})))
    groups = sets + ["avg (7 sets)", "avg (6, seed paper)"]

    def value(metrics: dict, group: str) -> float:
        if group == "avg (7 sets)":
            return metrics.get("avg_7")
        if group == "avg (6, seed paper)":
            return metrics.get("avg_6_seed")
        return (metrics.get("sets", {}).get(group) or {}).get("cosine_spearman")

    fig, ax = plt.subplots(figsize=(12, 6))
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    lowest, highest = 0.0, 0.0
    for i, (label, colour, seeds) in enumerate(series):
        values = np.array([[np.nan if value(m, g) is None else value(m, g) for g in groups] for m in seeds],
                          dtype=float)
        offset = x - 0.4 + width * (i + 0.5)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a set no seed has: an all-NaN column
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0, ddof=1) if len(seeds) > 1 else None
        suffix = f" (mean of {len(seeds)} seeds)" if len(seeds) > 1 else ""
        ax.bar(offset, mean, width, color=colour, label=label + suffix, yerr=std, capsize=2)
        if len(seeds) > 1:
            for row in values:
                ax.plot(offset, row, "o", color="black", ms=2.5, alpha=0.7)
        if np.isfinite(values).any():
            lowest, highest = min(lowest, np.nanmin(values)), max(highest, np.nanmax(values))
    ax.axvline(len(sets) - 0.5, color="black", lw=1)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel("Spearman of cosine similarity (x100)")
    ax.set_title("STS per set (MTEB main score); whisker: std over seeds, dots: each seed")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylim(min(0.0, lowest - 5), max(10.0, highest + 5))
    # the legend goes under the axes: above them it would hide the tallest bars
    return _legend_below(fig, path, *ax.get_legend_handles_labels())


def _cost_entries(arms: list[Arm], colours: dict[str, str], scores: list[Score]) -> tuple[list[dict], str]:
    """Bars of the cost figure: each arm (from its config and latest throughput score), then the open_clip
    reference row(s) the throughput benchmark timed alongside."""
    entries, references, settings = [], {}, set()
    for arm in arms:
        params, flops = arm.first.params, arm.first.flops_per_sample
        entry = {"label": arm.label, "colour": colours[arm.label],
                 "image_params": params.get("image_params"), "text_params": params.get("text_params"),
                 "image_gflops": flops.get("image_gflops"), "text_gflops": flops.get("text_gflops")}
        timed = sorted(arm_throughput(scores, arm), key=lambda score: score.date or "")
        if timed:
            row = own_row(timed[-1]) or {}
            entry.update(train=row.get("train_samples_per_s"), infer=row.get("infer_samples_per_s"))
            metrics = timed[-1].metrics
            settings.add(f"batch {metrics.get('batch_size')}, {metrics.get('device_name')}, "
                         f"{metrics.get('precision')}")
            for other in metrics.get("rows") or []:
                if other is not row and other.get("model") not in references:
                    references[other.get("model")] = other
        entries.append(entry)
    tags = arm_columns(arms)
    for entry in entries:
        entry["tag"] = tags[entry["label"]]
    for i, (name, row) in enumerate(references.items()):
        entries.append({"label": f"{name} (reference)", "colour": REFERENCE_GREYS[i % len(REFERENCE_GREYS)],
                        "tag": f"{name} (reference)" if len(arms) <= 3 else f"R{i + 1}",
                        "train": row.get("train_samples_per_s"), "infer": row.get("infer_samples_per_s"),
                        **{key: row.get(key) for key in ("image_params", "text_params", "image_gflops",
                                                         "text_gflops")}})
    return entries, "; ".join(sorted(settings))


def _grouped_bars(ax: plt.Axes, entries: list[dict], keys: tuple[str, ...], names: tuple[str, ...],
                  scale: float, hatches: tuple[str, ...] = ("", "//")) -> None:
    """One group per entry (its colour), one bar per key (its hatching), each bar labelled with its value;
    a log axis when the values span more than 30x."""
    values = np.array([[np.nan if e.get(k) is None else e[k] / scale for k in keys] for e in entries],
                      dtype=float)
    x = np.arange(len(entries))
    width = 0.8 / len(keys)
    for j, hatch in enumerate(hatches[:len(keys)]):
        bars = ax.bar(x - 0.4 + width * (j + 0.5), values[:, j], width, color=[e["colour"] for e in entries],
                      hatch=hatch, edgecolor="black", linewidth=0.6)
        if len(entries) <= 4:  # more bars than that: their labels would overlap (the CSV has the values)
            ax.bar_label(bars, labels=[f"{v:.3g}" if np.isfinite(v) else "" for v in values[:, j]],
                         fontsize=8, padding=1)
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / finite.min() > 30:
        ax.set_yscale("log")
    ax.set_xticks(x, [e["tag"] for e in entries], rotation=15 if len(entries) <= 3 else 0,
                  ha="right" if len(entries) <= 3 else "center")
    ax.set_xlim(-0.6, max(len(entries), 2.5) - 0.4)  # one or two models: keep bars from filling the panel


def cost_figure(arms: list[Arm], colours: dict[str, str], scores: list[Score], path: Path) -> Path:
    """Three panels: throughput (train / inference samples/s), parameters (M) and forward GFLOPs/sample,
    each split by tower (image solid, text hatched)."""
    entries, settings = _cost_entries(arms, colours, scores)
    fig, axes = plt.subplots(1, 3, figsize=(14, 5.5))
    if any(entry.get("train") is not None for entry in entries):
        _grouped_bars(axes[0], entries, ("train", "infer"), ("training step", "inference"), 1.0)
        axes[0].set_title(f"Throughput (benchmark: {settings})", fontsize=10)
    else:  # no throughput benchmark: what the training logs measured, under the trainer's own load
        for entry, arm in zip(entries, arms, strict=False):
            entry["train"] = float(np.mean([run.train["samples_per_s"].median() for run in arm.runs]))
        _grouped_bars(axes[0], entries[:len(arms)], ("train",), ("training, median of logs",), 1.0)
        axes[0].set_title("Throughput during training (no throughput scores)", fontsize=10)
    axes[0].set_ylabel("samples per second")
    _grouped_bars(axes[1], entries, ("image_params", "text_params"), ("image tower", "text tower"), 1e6)
    axes[1].set_ylabel("parameters (millions)")
    axes[1].set_title("Parameters per tower (+ projections)")
    _grouped_bars(axes[2], entries, ("image_gflops", "text_gflops"), ("image tower", "text tower"), 1.0)
    axes[2].set_ylabel("forward GFLOPs per sample (training = 3x)")
    axes[2].set_title("Compute per sample (forward)")
    # colour = model (its tag under the bars), hatching = which part: one legend under the panels
    handles = [Patch(facecolor=entry["colour"], edgecolor="black", label=entry["label"] if entry["tag"] ==
                     entry["label"] else f"{entry['tag']}: {entry['label']}") for entry in entries]
    handles += [Patch(facecolor="white", edgecolor="black", hatch=hatch, label=name)
                for name, hatch in (("solid: image tower / training step", ""),
                                    ("hatched: text tower / inference", "//"))]
    return _legend_below(fig, path, handles, [handle.get_label() for handle in handles])
