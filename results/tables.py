"""The report's tables as pandas DataFrames: the headline (mean +- std over seeds per arm), every run,
every score with its CI, the shared recipe and the provenance of each number; plus a Markdown renderer.

Standard deviations are sample standard deviations over seeds (ddof=1), so one seed has none.
Used by ``python -m results.report``; reads nothing itself.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from results.runs import Arm, Run
from results.scores import Score, arm_throughput, metric_rows, own_row, run_score, score_note
from runfolder import CONFIG, FINAL_EVAL, METRICS, RunFolder
from runfolder.vocabulary import WORD_ORDER_TASKS  # noqa: F401 - the report's other modules import it here

MISSING = "–"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    per_run: Callable[[Run, list[Score]], float | None] | None = None  # averaged over seeds
    per_arm: Callable[[Arm, list[Score]], float | None] | None = None  # one value per arm (cost)
    decimals: int = 2
    # show a 95% CI: of the seed mean (t) with several seeds, the run's own bootstrap CI with one
    ci: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _final(key: str) -> Callable[[Run, list[Score]], float | None]:
    return lambda run, scores: _number(run.final_eval.get(key))


def _score(benchmark: str, *path: str) -> Callable[[Run, list[Score]], float | None]:
    def get(run: Run, scores: list[Score]) -> float | None:
        score = run_score(scores, run, benchmark)
        value: Any = score.metrics if score is not None else None
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return _number(value)
    return get


def _final_or_score(key: str, benchmark: str, metric: str) -> Callable[[Run, list[Score]], float | None]:
    """The run's final in-training evaluation of ``key``, else its benchmark score file."""
    def get(run: Run, scores: list[Score]) -> float | None:
        value = _number(run.final_eval.get(key))
        return value if value is not None else _score(benchmark, metric)(run, scores)
    return get


def run_ci(metric_key: str, run: Run, scores: list[Score]) -> tuple[float, float] | None:
    """The run's bootstrap 95% CI of a top-1 metric: its final evaluation's, else its score file's."""
    low, high = (_number(run.final_eval.get(f"{metric_key}_ci_{end}")) for end in ("lo", "hi"))
    if low is not None and high is not None:
        return low, high
    benchmark = {"imagenet_top1": "imagenet_zeroshot", "toy_top1": "toy_zeroshot"}.get(metric_key)
    score = run_score(scores, run, benchmark) if benchmark else None
    ci = score.metrics.get("top1_ci95") if score is not None else None
    if isinstance(ci, list) and len(ci) == 2 and all(_number(v) is not None for v in ci):
        return float(ci[0]), float(ci[1])
    return None


def headline_throughput(arm: Arm, scores: list[Score], mode: str) -> float | None:
    """The arm's benchmark samples/s from its most recent throughput score (see :func:`throughput_notes`)."""
    candidates = sorted(arm_throughput(scores, arm), key=lambda score: score.date or "")
    row = own_row(candidates[-1]) if candidates else None
    return _number(row.get(f"{mode}_samples_per_s")) if row else None



HEADLINE = (
    Metric("params_m", "params (M)",
           per_arm=lambda arm, scores: _number(arm.first.params.get("total_params", math.nan) / 1e6)),
    Metric("train_gflops", "train GFLOPs/sample", per_arm=lambda arm, scores: arm.first.train_gflops),
    Metric("final_loss", "final train loss (last log)",
           per_run=lambda run, scores: _number(run.train["loss"].iloc[-1]), decimals=3),
    Metric("toy_top1_seen", "toy zero-shot top-1, seen classes (%)", per_run=_final("toy_top1_seen"),
           decimals=1, ci=True),
    Metric("toy_top1_held_out", "toy zero-shot top-1, held-out classes (%)",
           per_run=_final("toy_top1_held_out"), decimals=1, ci=True),
    Metric("toy_i2t_r1", "toy val image->text R@1 (%)", per_run=_final("toy_i2t_r1"), decimals=1),
    Metric("toy_t2i_r1", "toy val text->image R@1 (%)", per_run=_final("toy_t2i_r1"), decimals=1),
    Metric("toy_val_loss", "toy val contrastive loss", per_run=_final("toy_val_loss"), decimals=3),
    Metric("toy_top1", "toy zero-shot top-1, all classes (%)", per_run=_final("toy_top1"), decimals=1,
           ci=True),
    Metric("toy_robust_top1", "toy top-1, v4 prompts (robustness) (%)", per_run=_final("toy_robust_top1"),
           decimals=1),
    Metric("toy_top5", "toy top-5 (%)", per_run=_final("toy_top5"), decimals=1),
    Metric("toy_colour_acc", "toy colour acc (%)", per_run=_final("toy_colour_acc"), decimals=1),
    Metric("toy_shape_acc", "toy shape acc (%)", per_run=_final("toy_shape_acc"), decimals=1),
    Metric("toy_benchmark_top1", "toy top-1, benchmark (%)", per_run=_score("toy_zeroshot", "top1"),
           decimals=1),
    Metric("imagenet_top1", "ImageNet zero-shot top-1 (%)",
           per_run=_final_or_score("imagenet_top1", "imagenet_zeroshot", "top1"), ci=True),
    Metric("imagenet_top5", "ImageNet top-5 (%)",
           per_run=_final_or_score("imagenet_top5", "imagenet_zeroshot", "top5"), ci=True),
    Metric("sts_avg_7", "STS avg, 7 sets (Spearman x100)", per_run=_score("sts", "avg_7")),
    Metric("sts_avg_6_seed", "STS avg, 6 sets (seed paper)", per_run=_score("sts", "avg_6_seed")),
    *(Metric(f"word_order_{task.replace('-', '_')}", f"word order {task} top-1 (%)",
             per_run=_score("word_order", "tasks", task, "top1"), decimals=1) for task in WORD_ORDER_TASKS),
    *(Metric(f"word_order_{task.replace('-', '_')}_blind", f"word order {task}, blind text prior (%)",
             per_run=_score("word_order", "tasks", task, "blind_top1"), decimals=1)
      for task in WORD_ORDER_TASKS),
    Metric("word_order_bag_of_words", "bag-of-words score (100: order-blind text)",
           per_run=_score("word_order", "text_only", "bag_of_words_score"), decimals=1),
    Metric("retrieval_i2t_r1", "retrieval image->text R@1 (%)", per_run=_score("retrieval", "i2t_R@1")),
    Metric("retrieval_t2i_r1", "retrieval text->image R@1 (%)", per_run=_score("retrieval", "t2i_R@1")),
    Metric("train_samples_per_s", "train samples/s (benchmark)",
           per_arm=lambda arm, scores: headline_throughput(arm, scores, "train"), decimals=1),
    Metric("infer_samples_per_s", "inference samples/s (benchmark)",
           per_arm=lambda arm, scores: headline_throughput(arm, scores, "infer"), decimals=1),
    Metric("in_training_samples_per_s", "samples/s during training (median of logs)",
           per_run=lambda run, scores: _number(run.train["samples_per_s"].median()), decimals=1),
)


def headline_frame(arms: list[Arm], scores: list[Score]) -> pd.DataFrame:
    """Numbers per arm: ``seeds`` plus ``<key>_mean``, ``<key>_std``, ``<key>_n`` for every metric that has
    data (per-arm cost metrics: the value as mean, std NaN, n 1). Index: arm label."""
    rows = []
    for arm in arms:
        row: dict[str, Any] = {"arm": arm.label, "seeds": len(arm.runs)}
        for metric in HEADLINE:
            if metric.per_run is not None:
                values = [v for v in (metric.per_run(run, scores) for run in arm.runs) if v is not None]
            else:
                value = metric.per_arm(arm, scores)
                values = [] if value is None else [value]
            series = pd.Series(values, dtype=float)
            row[f"{metric.key}_mean"] = series.mean() if values else math.nan
            row[f"{metric.key}_std"] = series.std(ddof=1) if len(values) > 1 else math.nan
            row[f"{metric.key}_n"] = len(values)
            if metric.ci:
                row[f"{metric.key}_ci_lo"], row[f"{metric.key}_ci_hi"] = _headline_ci(metric, arm, values,
                                                                                      scores)
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("arm")
    empty = [metric.key for metric in HEADLINE if (frame[f"{metric.key}_n"] == 0).all()]
    return frame.drop(columns=[f"{key}_{stat}" for key in empty for stat in ("mean", "std", "n")])


def _headline_ci(metric: Metric, arm: Arm, values: list[float], scores: list[Score]) -> tuple[float, float]:
    """95% CI of the arm's number: the t interval of the seed mean, or the one run's bootstrap CI."""
    if len(values) >= 2:
        low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        return float(low), float(high)
    ci = run_ci(metric.key, arm.runs[0], scores) if len(values) == 1 and len(arm.runs) == 1 else None
    return ci if ci is not None else (math.nan, math.nan)


def _mean_std(mean: float, std: float, n: int, seeds: int, decimals: int, per_arm: bool) -> str:
    if n == 0 or math.isnan(mean):
        return MISSING
    text = f"{mean:.{decimals}f}"
    if not per_arm:
        text += f" ± {std:.{decimals}f}" if n > 1 else ""
        if n != seeds:
            text += f" (n={n})"
    return text


def arm_columns(arms: list[Arm]) -> dict[str, str]:
    """Arm label -> its column in the report's tables: the label with up to 3 arms, else A1, A2, ...
    (eight labels of 40 characters would not fit 1,280 px; the report lists what each tag stands for)."""
    if len(arms) <= 3:
        return {arm.label: arm.label for arm in arms}
    return {arm.label: f"A{i}" for i, arm in enumerate(arms, start=1)}


def headline_display(frame: pd.DataFrame, arms: list[Arm]) -> pd.DataFrame:
    """The headline as text, metrics as rows and arms as columns: ``mean ± std`` per cell, ``(n=k)``
    where fewer seeds than the arm has, and with up to 3 arms ``[low, high]`` (95% CI) for the metrics
    that show one (every number, CIs included, is in headline.csv)."""
    columns = arm_columns(arms)
    with_ci = len(arms) <= 3
    by_label = {arm.label: arm for arm in arms}
    rows = [{"metric": "seeds", **{columns[label]: str(len(by_label[label].runs)) for label in frame.index}}]
    for metric in HEADLINE:
        if f"{metric.key}_mean" not in frame.columns:
            continue
        row = {"metric": metric.label}
        for label, numbers in frame.iterrows():
            cell = _mean_std(numbers[f"{metric.key}_mean"], numbers[f"{metric.key}_std"],
                             int(numbers[f"{metric.key}_n"]), len(by_label[label].runs), metric.decimals,
                             metric.per_run is None)
            if with_ci and metric.ci and cell != MISSING:
                ci = _ci(numbers[f"{metric.key}_ci_lo"], numbers[f"{metric.key}_ci_hi"], metric.decimals)
                cell += f" {ci}" if ci != MISSING else ""
            row[columns[label]] = cell
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(low: Any, high: Any, decimals: int = 1) -> str:
    if _number(low) is None or _number(high) is None:
        return MISSING
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def runs_frame(arms: list[Arm]) -> pd.DataFrame:
    """One row per run (runs.csv): seed, length, the health of its training (data wait, skipped samples,
    non-finite steps) and every number of its final evaluation."""
    rows = []
    for arm in arms:
        for run in arm.runs:
            last = run.train.iloc[-1]
            row = {"run": run.label, "arm": arm.label, "seed": run.seed, "steps": int(last["step"]),
                   "samples_seen": int(last["samples_seen"]), "final_train_loss": _number(last["loss"]),
                   "samples_per_s_median": _number(run.train["samples_per_s"].median()),
                   "data_wait_frac_median": _number(run.train["data_wait_frac"].median()),
                   "skipped_samples": _number(last.get("skipped_total")),
                   "nonfinite_steps": _number(last.get("nonfinite_steps"))}
            row.update({f"final_{key}": value for key, value in run.final_eval.items()
                        if key != "step" and _number(value) is not None})
            rows.append(row)
    return pd.DataFrame(rows)


FINAL_EVAL_METRICS = (("top1", "top-1 (%)"), ("top5", "top-5 (%)"),
                      ("mean_per_class_recall", "mean per-class recall (%)"),
                      ("colour_acc", "colour accuracy (%)"), ("shape_acc", "shape accuracy (%)"))


def scores_frame(runs: list[Run], scores: list[Score]) -> pd.DataFrame:
    """Every number (scores.csv): the runs' final in-training evaluations, then every score file's
    metrics, each with its 95% CI where the benchmark computes one."""
    rows = []
    for run in runs:
        final = run.final_eval
        source = FINAL_EVAL if RunFolder(run.path).final_eval.is_file() else METRICS
        for name, metric, label in [(name, *p) for name in ("toy", "imagenet") for p in FINAL_EVAL_METRICS]:
            key = f"{name}_{metric}"
            if key in final:
                ci = ((final.get(f"{key}_ci_lo"), final.get(f"{key}_ci_hi")) if metric == "top1"
                      else (None, None))
                rows.append({"benchmark": f"{name} (in training)", "model": run.name, "belongs to": run.label,
                             "metric": label, "value": _number(final[key]), "ci95_low": _number(ci[0]),
                             "ci95_high": _number(ci[1]), "n": _number(final.get(f"{name}_n")),
                             "note": f"step {final.get('step', '?')}", "file": f"{run.label}/{source}"})
    for score in scores:
        note = score_note(score)
        for row in metric_rows(score):
            rows.append({"benchmark": score.benchmark, "model": row["subject"] or score.model_id,
                         "belongs to": score.owner, "metric": row["metric"], "value": row["value"],
                         "ci95_low": row["ci95_low"], "ci95_high": row["ci95_high"], "n": _number(row["n"]),
                         "note": note, "file": str(score.path)})
    return pd.DataFrame(rows)


def recipe_frame(runs: list[Run], differing: list[str], per_arm: bool = False) -> pd.DataFrame:
    """The recipe every run shares (seed: the list of seeds; fields that differ: per run under
    --allow-mixed, a pointer to :func:`arm_recipes_frame` with ``per_arm``)."""
    rows = []
    for key in sorted({key for run in runs for key in run.recipe}):
        if key == "seed":
            value = ", ".join(sorted({str(run.seed) for run in runs}, key=lambda s: (len(s), s)))
        elif key in differing and per_arm:
            value = "per arm (next table)"
        elif key in differing:
            shown = dict.fromkeys(readable(run.recipe.get(key)) for run in runs)
            value = "DIFFERS: " + " / ".join(shown)
        else:
            value = readable(runs[0].recipe.get(key))
        rows.append({"recipe field": key, "value": value})
    world = sorted({str(run.config.get("world_size")) for run in runs})
    global_batch = sorted({str(run.config.get("global_batch_size")) for run in runs})
    rows.append({"recipe field": "world size (not in the recipe)", "value": ", ".join(world)})
    rows.append({"recipe field": "global batch size", "value": ", ".join(global_batch)})
    return pd.DataFrame(rows)


def seedless_sha256(recipe: dict[str, Any]) -> str:
    """sha256 of the recipe's canonical JSON (launch/config.py's: sorted keys, no spaces) without its seed:
    one hash for every seed of a recipe (``recipe_sha256`` includes the seed)."""
    fields = {key: value for key, value in recipe.items() if key != "seed"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def arm_recipes_frame(arms: list[Arm], differing: list[str]) -> pd.DataFrame:
    """One row per arm (``--recipe-per-arm``): its seeds, the recipe's sha256 without the seed and the
    fields in which the arms' recipes differ (each arm's runs share one recipe up to the seed)."""
    columns = arm_columns(arms)
    return pd.DataFrame([{"arm": columns[arm.label], "seeds": ", ".join(str(seed) for seed in arm.seeds),
                          "recipe sha256 (seed left out)": seedless_sha256(arm.first.recipe),
                          **{key: readable(arm.first.recipe.get(key)) for key in differing}} for arm in arms])


def readable(value: Any) -> str:
    """A recipe value as a reader writes it: no Python reprs (None, True, dicts, lists)."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{key} {readable(item)}" for key, item in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(item) for item in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def provenance_frames(runs: list[Run], scores: list[Score]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs: run, recipe_sha256, git commit, config file; score files: file, owner, recipe_sha256, ...)."""
    run_rows = [{"run": run.label, "name": run.name, "model": run.model_name, "seed": run.seed,
                 "recipe_sha256": run.recipe_sha256, "git commit": run.git_commit,
                 "world size": run.config.get("world_size"), "file": f"{run.label}/{CONFIG}"}
                for run in runs]
    score_rows = [{"score file": str(score.path), "benchmark": score.benchmark, "model_id": score.model_id,
                   "belongs to": score.owner, "used": "yes" if score.used else f"no ({score.status})",
                   "recipe_sha256": score.recipe_sha256 or MISSING,
                   "checkpoint_sha256": (score.model.get("checkpoint_sha256") or MISSING)[:16],
                   "git commit": score.git_commit or MISSING, "date": score.date or MISSING}
                  for score in scores]
    return pd.DataFrame(run_rows), pd.DataFrame(score_rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table through pandas (tabulate). Cells are passed as text, so numbers
    keep the formatting chosen here; tabulate escapes no ``|``, so cells are escaped first."""
    if frame.empty:
        return "_(none)_"

    def cell(value: Any) -> str:
        text = MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    text = frame.astype(object).map(cell).rename(columns=cell)
    return text.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def throughput_notes(arms: list[Arm], scores: list[Score]) -> list[str]:
    """Warn when the arms' headline throughput numbers were timed under different settings."""
    settings = {}
    for arm in arms:
        candidates = sorted(arm_throughput(scores, arm), key=lambda score: score.date or "")
        if candidates:
            metrics = candidates[-1].metrics
            settings[arm.label] = (metrics.get("batch_size"), metrics.get("device_name"),
                                   metrics.get("precision"))
    if len(set(settings.values())) > 1:
        shown = "; ".join(f"{label}: batch {b}, {d}, {p}" for label, (b, d, p) in settings.items())
        return [f"throughput was timed under different settings per arm ({shown}); its samples/s are not "
                "directly comparable"]
    return []


def subset_notes(scores: list[Score]) -> list[str]:
    """Used scores computed on part of their data (``--limit``): not comparable with full-set numbers."""
    by_setting: dict[tuple[str, Any], list[str]] = {}
    for score in scores:
        if score.used and score.benchmark != "throughput" and score.settings.get("limit") is not None:
            by_setting.setdefault((score.benchmark, score.settings["limit"]), []).append(score.model_id)
    return [f"{benchmark} scores of {', '.join(models)} were computed with --limit {limit} (a subset of the "
            "data, for quick checks): not comparable with full-set numbers"
            for (benchmark, limit), models in by_setting.items()]
