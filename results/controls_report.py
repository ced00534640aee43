"""The controls' tables: is the Mixer-Transformer ranking on the toy the pooling's or the task's doing?

Two tables from run folders (final_eval.json's toy seen-class top-1, `toy_top1_seen`, is the endpoint):
- the pooling control (`pooling_summary`): per tower, its default pool (the tuning grid's runs of the
  chosen config on the selection seeds) against the other pool (the same recipe, `--image-pool` set), seed
  by seed: seen / held-out top-1 and val loss, each seed's difference (other - default) and their mean.
  Two seeds carry no interval, so there is none and no verdict word;
- the toy variants (`variants_summary`): per condition (the standard task's headline, the hard task, a
  second toy seed), n per arm, each arm's mean, Mixer - Transformer with its 95% Welch interval
  (results.significance.welch_interval) and whether the standard condition's ranking holds.

Reads files only (results.runs); written by `python -m results.drivers.controls` (its --report-only too):
`<out>/report.md` + `report.json` and `summary.md` + `summary.json`. docs/toy-protocol.md has the protocol.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from results.runs import ReportInputError, load_run, recipe_differences
from results.significance import CONFIDENCE, welch_interval
from runfolder import RunFolder, atomic_write_text
from runfolder.records import write_json
from runfolder.vocabulary import TOY_TOP1_HELD_OUT, TOY_TOP1_SEEN, TOY_VAL_LOSS

SEEN, HELD_OUT, VAL_LOSS = TOY_TOP1_SEEN, TOY_TOP1_HELD_OUT, TOY_VAL_LOSS  # final_eval.json keys
METRICS = ((SEEN, "seen top-1 (%)", 1), (HELD_OUT, "held-out top-1 (%)", 1), (VAL_LOSS, "val loss", 3))
NAMES = {"transformer": "Transformer", "mixer": "Mixer", "cnn": "CNN"}
# what `--image-pool library` is for each image family (runfolder.vocabulary.IMAGE_POOLS says so in words)
DEFAULT_POOL = {"transformer": "class token", "mixer": "mean of the patch tokens"}
OTHER_POOL = {"avg": "mean of the patch tokens", "map": "attention pooling, one learned query"}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def finished(run_dir: Path) -> bool:
    return RunFolder(run_dir).final_eval.is_file()


def _numbers(run) -> dict[str, float]:
    return {key: _number(run.final_eval.get(key)) for key, _, _ in METRICS}


# --- the pooling control ----------------------------------------------------------------------------

def pooling_summary(pairs: dict[str, list[tuple[int, Path, Path]]], pools: dict[str, str]) -> dict[str, Any]:
    """`pairs`: per tower, (seed, default-pool run, other-pool run); `pools`: per tower, the other pool.
    A run without final_eval.json is missing; a pair whose recipes differ in more than the pool and the
    seed raises ReportInputError naming the fields."""
    towers = {}
    for tower, seeds in pairs.items():
        rows = []
        for seed, default_dir, other_dir in seeds:
            runs = {side: load_run(path) if finished(path) else None
                    for side, path in (("default", default_dir), ("other", other_dir))}
            if runs["default"] and runs["other"]:
                # the pool changes the hash: only the recipe's fields themselves must agree
                fields = [name for name in recipe_differences([runs["default"], runs["other"]],
                                                              ignore=("seed", "image_pool"))
                          if name != "recipe_sha256"]
                if fields or runs["default"].arm_key != runs["other"].arm_key:
                    shown = ", ".join(fields) or "towers"
                    raise ReportInputError(f"{other_dir}: differs from its baseline {default_dir} in "
                                           f"{shown}; expected the same recipe and towers up to --image-pool")
            row: dict[str, Any] = {"seed": seed, "default_run": str(default_dir), "other_run": str(other_dir)}
            for side, run in runs.items():
                row[side] = _numbers(run) if run else None
            row["difference"] = ({key: row["other"][key] - row["default"][key] for key, _, _ in METRICS}
                                 if row["default"] and row["other"] else None)
            rows.append(row)
        paired = [row["difference"] for row in rows if row["difference"]]
        towers[tower] = {
            "default_pool": f"library ({DEFAULT_POOL.get(tower, 'the tower own')})",
            "other_pool": f"{pools[tower]} ({OTHER_POOL.get(pools[tower], pools[tower])})",
            "seeds": rows, "n_pairs": len(paired),
            "mean_difference": ({key: float(np.mean([d[key] for d in paired])) for key, _, _ in METRICS}
                                if paired else None)}
    return {"endpoint": SEEN, "towers": towers}


def _cell(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def pooling_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Control: is the Mixer's lead its pooling?", "",
             "Each image tower at its headline recipe with the other pooling, on the selection seeds; the "
             "default-pool runs are the tuning grid's runs of the chosen config on the same seeds (the same "
             "recipe up to `--image-pool`, checked). Two seeds a tower: the per-seed differences are "
             "the evidence; no interval and no verdict word.", ""]
    for tower, arm in summary["towers"].items():
        lines += [f"## {NAMES.get(tower, tower)}: {arm['default_pool']} -> {arm['other_pool']}", "",
                  "| seed | " + " | ".join(f"{label}: default | other | other - default"
                                           for _, label, _ in METRICS) + " |",
                  "|---:|" + "---:|---:|---:|" * len(METRICS)]
        for row in arm["seeds"]:
            cells = []
            for key, _, digits in METRICS:
                values = [(row[side] or {}).get(key) for side in ("default", "other")]
                cells += [_cell(values[0], digits), _cell(values[1], digits),
                          _cell((row["difference"] or {}).get(key), digits, sign=True)]
            lines.append(f"| {row['seed']} | " + " | ".join(cells) + " |")
        if arm["seeds"]:
            first = arm["seeds"][0]
            lines += ["", f"Runs: default `{Path(first['default_run']).parent}/`, other "
                          f"`{Path(first['other_run']).parent}/`."]
        missing = [f"{row[side + '_run']}" for row in arm["seeds"] for side in ("default", "other")
                   if row[side] is None]
        mean = arm["mean_difference"]
        if mean:
            shown = ", ".join(f"{label} {_cell(mean[key], digits, sign=True)}"
                              for key, label, digits in METRICS)
            lines += ["", f"Mean difference (other - default) over {arm['n_pairs']} seed(s): {shown}."]
        if missing:
            lines += ["", "Not finished (no final_eval.json): " + ", ".join(f"`{m}`" for m in missing) + "."]
        lines.append("")
    lines += ["Regenerate: `python -m results.drivers.controls --only pooling --report-only`.", ""]
    return "\n".join(lines)


def write_pooling(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    return (write_json(out / "report.json", summary),
            atomic_write_text(out / "report.md", pooling_markdown(summary)))


# --- the toy variants -------------------------------------------------------------------------------

def _arm(run_dirs: list[Path]) -> list[float]:
    values = [_number(load_run(path).final_eval.get(SEEN)) for path in run_dirs if finished(path)]
    return [value for value in values if math.isfinite(value)]


def _holds(row: dict[str, Any], standard: dict[str, Any] | None) -> str:
    """Whether the standard condition's ranking holds here, in words that claim no more than the interval."""
    resolved = math.isfinite(row["low"]) and (row["low"] > 0 or row["high"] < 0)
    if not resolved:
        return f"not resolved at n={row['n']['transformer']}/{row['n']['mixer']}"
    if row is standard:
        return "the reference: " + ("Mixer ahead" if row["difference"] > 0 else "Transformer ahead")
    if standard is None:
        return "no standard condition to compare with"
    if not (math.isfinite(standard["low"]) and (standard["low"] > 0 or standard["high"] < 0)):
        return "no standard ranking to hold (the standard condition is not resolved)"
    return "yes" if (row["difference"] > 0) == (standard["difference"] > 0) else "no: reversed"


def variants_summary(conditions: list[tuple[str, str, dict[str, list[Path]]]]) -> dict[str, Any]:
    """`conditions`: (key, label, {"transformer": run dirs, "mixer": run dirs}); the first, when its key is
    `standard` and it has runs, is the reference whose sign the others must keep."""
    rows = []
    for key, label, arms in conditions:
        values = {tower: _arm(arms.get(tower, [])) for tower in ("transformer", "mixer")}
        row: dict[str, Any] = {"condition": key, "label": label, "n": {t: len(v) for t, v in values.items()},
                               "mean": {t: float(np.mean(v)) if v else math.nan for t, v in values.items()},
                               "difference": math.nan, "low": math.nan, "high": math.nan}
        if values["transformer"] and values["mixer"]:
            row["difference"] = row["mean"]["mixer"] - row["mean"]["transformer"]
            if min(map(len, values.values())) >= 2 and max(np.ptp(v) for v in values.values()) > 0:
                _, row["low"], row["high"] = welch_interval(values["mixer"], values["transformer"])
        rows.append(row)
    standard = next((row for row in rows if row["condition"] == "standard"
                     and math.isfinite(row["difference"])), None)
    for row in rows:
        finite = math.isfinite(row["difference"])
        row["ranking_holds"] = _holds(row, standard) if finite else "needs both arms' runs"
    return {"endpoint": SEEN, "confidence": CONFIDENCE, "interval": "Welch t", "conditions": rows}


def variants_markdown(summary: dict[str, Any]) -> str:
    level = f"{summary['confidence']:.0%}"
    lines = ["# Does the Mixer-Transformer ranking hold on other toy tasks?", "",
             "Seen-class top-1 (%) at the end of each run, each arm at its headline recipe. "
             "\"Ranking holds\": the Mixer - Transformer difference has the standard condition's sign and "
             f"its {level} Welch interval excludes 0; an interval that includes 0 is \"not resolved\" "
             "at that n (transformer/mixer runs), which is not evidence of no difference.", "",
             f"| condition | n (T / M) | Transformer mean | Mixer mean | Mixer - Transformer [{level}] | "
             "ranking holds |", "|---|---:|---:|---:|---:|---|"]
    for row in summary["conditions"]:
        interval = (f" [{row['low']:+.1f}, {row['high']:+.1f}]" if math.isfinite(row["low"]) else "")
        lines.append(f"| {row['label']} | {row['n']['transformer']} / {row['n']['mixer']} | "
                     f"{_cell(row['mean']['transformer'], 1)} | {_cell(row['mean']['mixer'], 1)} | "
                     f"{_cell(row['difference'], 1, sign=True)}{interval} | {row['ranking_holds']} |")
    lines += ["", "Each variant's own report (verdicts, curves, each arm's recipe): "
              "`<variant>/report/report.md`. Regenerate: "
              "`python -m results.drivers.controls --only variants --report-only`."]
    return "\n".join(lines) + "\n"


def write_variants(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    return (write_json(out / "summary.json", summary),
            atomic_write_text(out / "summary.md", variants_markdown(summary)))
