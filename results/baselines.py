"""Untrained baselines beside the trained scores: what each arm's architecture scores at its initial
weights on STS and the word-order tasks, so a reader sees how much of a score training made.

A baseline is a score file written with ``--untrained`` (``python -m benchmarks.sts --model RUN
--untrained``: the run's architecture under its recipe seed, no checkpoint; model source "untrained run
architecture", model id ``<run>-untrained``) in the report's scores folder. It belongs to the arm whose
runs include the run it names. Why it matters: the toy captions use about 60 of the tokenizer's 49,408
tokens, so a toy-trained text tower's STS embeds mostly untrained token embeddings, and the toy
word-order tasks sit at the ceiling; the table flags both.

Used by ``results.report`` (one table, beside the headline); reads files only.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from results.runs import Arm, Run
from results.scores import Score
from results.tables import HEADLINE, WORD_ORDER_TASKS, Metric

UNTRAINED_SOURCE = "untrained run architecture"  # benchmarks.encoder.load_untrained's model source
# Scores with a baseline: STS (avg of the 7 sets) and the toy word-order tasks' top-1.
BASELINE_KEYS = ("sts_avg_7", *(f"word_order_{task.replace('-', '_')}" for task in WORD_ORDER_TASKS))
# Percent metrics whose arm mean is within this of 100 are at the ceiling: the toy tasks' 95% intervals
# at n = 2,152-3,200 pairs are about +-0.3 points there, so 1 point leaves nothing for an arm to show.
CEILING_MARGIN = 1.0


def _metrics() -> list[Metric]:
    by_key = {metric.key: metric for metric in HEADLINE}
    return [by_key[key] for key in BASELINE_KEYS]


def untrained_scores(scores: list[Score]) -> list[Score]:
    return [score for score in scores if score.model.get("source") == UNTRAINED_SOURCE]


def _baseline_run(score: Score, arm: Arm) -> Run | None:
    """The arm's run whose initial weights `score` scored (by its folder, else by its name)."""
    named = str(score.model.get("untrained_of") or "")
    for run in arm.runs:
        try:
            if named and Path(named).resolve() == run.path:
                return run
        except OSError:
            pass
    by_name = [run for run in arm.runs if Path(named).name in (run.name, run.path.name)]
    return by_name[0] if len(by_name) == 1 else None


def _value(metric: Metric, run: Run, score: Score) -> float | None:
    """`metric` read from `score` as if the run owned it (the report's own metric definitions)."""
    owned = dataclasses.replace(score, run=run, status="run")
    return metric.per_run(run, [owned])


def baseline_frame(arms: list[Arm], scores: list[Score]) -> pd.DataFrame:
    """One row per arm x metric with a baseline: the trained mean (sd, seeds), the untrained score (its
    init seed), trained - untrained, and a note where the task is at the ceiling. Empty: no baseline."""
    rows = []
    baselines = untrained_scores(scores)
    for arm in arms:
        for metric in _metrics():
            trained = [v for v in (metric.per_run(run, scores) for run in arm.runs) if v is not None]
            for score in baselines:
                run = _baseline_run(score, arm)
                untrained = _value(metric, run, score) if run is not None else None
                if untrained is None:
                    continue
                mean = sum(trained) / len(trained) if trained else math.nan
                sd = pd.Series(trained).std(ddof=1) if len(trained) > 1 else math.nan
                places = metric.decimals
                notes = []
                if metric.key.startswith("word_order") and mean >= 100 - CEILING_MARGIN:
                    notes.append(f"at ceiling (within {CEILING_MARGIN:g} of 100)")
                if metric.key.startswith("word_order") and untrained >= 100 - CEILING_MARGIN:
                    notes.append("untrained at ceiling")
                rows.append({"arm": arm.label, "metric": metric.label,
                             "trained mean (sd)": f"{mean:.{places}f} ({sd:.{places}f})" if trained else "–",
                             "seeds": len(trained), "untrained": f"{untrained:.{places}f}",
                             "init seed": run.seed,
                             "trained - untrained": f"{mean - untrained:+.{places}f}" if trained else "–",
                             "note": "; ".join(notes)})
    return pd.DataFrame(rows)


def add_section(doc, arms: list[Arm], scores: list[Score]) -> pd.DataFrame:
    """The report's "Untrained baselines" section (`doc`: results.report's Document), when any baseline
    score is present; returns its table."""
    table = baseline_frame(arms, scores)
    if not table.empty:
        doc.add("h2", "Untrained baselines")
        doc.add("p", "Each arm's architecture at its initial weights (one run's recipe seed, no training; "
                     "`python -m benchmarks.sts --model RUN --untrained`), scored like the trained runs. A "
                     "trained score near its baseline is not something training made; word-order tasks "
                     f"within {CEILING_MARGIN:g} point of 100 are at the ceiling and cannot rank arms.")
        doc.add("table", table)
    return table
