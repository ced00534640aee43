"""The verdicts in words and as a table: the primary endpoint's sentence (the report's first), the
one-sentence verdict per compared arm ("mixer-w96 wins toy seen-class top-1 by 11.5 [+9.0, +14.1] and
loses STS (7 sets) by 2.5 [...]"), and the verdict table (one row per metric, one column group per arm).

    verdicts = significance.compare_arms(arms, scores, primary="toy_top1_seen")
    primary_sentence(verdicts); summary_sentence(verdicts, "holm"); verdict_frame(verdicts, "holm")

Reads nothing itself; used by ``python -m results.report``.
"""

from __future__ import annotations

import math

import pandas as pd

from results import endpoints
from results.significance import Verdict

CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "uncorrected"}
UNITS = {"accuracy": "points", "similarity": "points", "loss": "nats", "throughput": "samples/s"}


def _short(verdict: Verdict) -> str:
    return endpoints.rule(verdict.metric).short


def _unit(verdict: Verdict) -> str:
    return UNITS.get(endpoints.rule(verdict.metric).kind, "")


def _interval(verdict: Verdict) -> str:
    return "" if math.isnan(verdict.low) else f" [{verdict.low:+.1f}, {verdict.high:+.1f}]"


def _seeds(verdict: Verdict) -> str:
    arm, base = verdict.seeds
    if arm == base:
        return f"{arm} seed{'s' if arm > 1 else ''} each"
    return f"{arm} vs {base} seeds"


def _needed(verdict: Verdict) -> str:
    if verdict.seeds_needed is None:
        if math.isnan(verdict.spread):
            return "a seed spread (--seed-sd, or 2+ seeds per arm) would size the seeds a verdict needs"
        return "no feasible number of seeds would make this difference a verdict"
    return (f"a verdict at this difference needs about {verdict.seeds_needed} seeds per arm (80% power, "
            f"seed sd {verdict.spread:.2g})")


def _outcome(verdict: Verdict) -> str:
    unit = _unit(verdict)
    if not verdict.verdict:
        return f"no architecture verdict ({verdict.reason}); {_needed(verdict)}"
    if verdict.verdict in ("better", "worse"):
        return f"{verdict.arm} is {verdict.verdict}"
    if verdict.verdict == "negligible":
        return (f"real but negligible (under the {verdict.min_difference:g} {unit} of practical "
                "interest)")
    if verdict.verdict == "equivalent":
        return f"equivalent (the interval lies within +-{verdict.min_difference:g} {unit})"
    return f"inconclusive; {_needed(verdict)}"


def primary_sentence(verdicts: list[Verdict], tags: dict[str, str] | None = None) -> str:
    """The report's first sentence: arms, difference, interval, verdict and seeds of the primary; with
    several compared arms one sentence naming each by its tag (``tags``: arm label -> column)."""
    primaries = [v for v in verdicts if v.role == "primary"]
    if not primaries:
        return "No primary endpoint could be compared (one arm, or no arm has the primary metric)."
    first = primaries[0]
    budget = f" at {first.budget:,.0f} samples seen" if first.budget else ""
    if len(primaries) == 1:
        return (f"Primary endpoint, {_short(first)}{budget}: {first.arm} {first.means[0]:.1f} vs "
                f"{first.baseline} {first.means[1]:.1f} ({_seeds(first)}), difference "
                f"{first.difference:+.1f} {_unit(first)}{', 95% interval' if _interval(first) else ''}"
                f"{_interval(first)} ({first.method}): {_outcome(first)}.")
    tags = tags or {}
    parts = [f"{tags.get(v.arm, v.arm)} {v.means[0]:.1f}, {v.difference:+.1f}{_interval(v)} "
             f"{v.verdict or 'no verdict'}" for v in primaries]
    return (f"Primary endpoint, {_short(first)}{budget}, each arm against {first.baseline} "
            f"{first.means[1]:.1f} ({first.seeds[1]} seed{'s' if first.seeds[1] > 1 else ''}; 95% intervals, "
            f"Holm across {len(primaries)} arms; methods and seeds per arm: verdicts.csv): "
            + "; ".join(parts) + ".")


def _phrase(verdict: Verdict) -> str:
    return f"{_short(verdict)} by {abs(verdict.difference):.1f}{_interval(verdict)}"


def summary_sentence(verdicts: list[Verdict], correction: str = "holm",
                     tags: dict[str, str] | None = None) -> str:
    """Per compared arm (named by its tag where ``tags`` has one): what it wins and loses (primary and
    key secondaries), then the other metrics counted by verdict."""
    tags = tags or {}
    if not verdicts:
        return "No metric has values on both arms to compare."
    sentences = []
    for arm in dict.fromkeys(v.arm for v in verdicts):
        mine = [v for v in verdicts if v.arm == arm]
        named = [v for v in mine if v.verdict in ("better", "worse")
                 and (v.role == "primary" or endpoints.rule(v.metric).key_secondary)]
        wins = [_phrase(v) for v in named if v.verdict == "better"]
        losses = [_phrase(v) for v in named if v.verdict == "worse"]
        parts = ([f"wins {', '.join(wins)}"] if wins else []) + ([f"loses {', '.join(losses)}"] if losses
                                                                  else [])
        found = " and ".join(parts) if parts else "no primary or key metric separates them"
        head = f"{tags.get(arm, arm)} vs {tags.get(mine[0].baseline, mine[0].baseline)}: {found}"
        others = [v for v in mine if v not in named and v.role != "primary"]
        counts = {word: sum(v.verdict == word for v in others)
                  for word in ("better", "worse", "negligible", "equivalent", "inconclusive")}
        shown = [f"{n} {word}" for word, n in counts.items() if n]
        silent = sum(not v.verdict for v in others)
        tail = (f"; other secondary metrics ({CORRECTION_NAMES[correction]}): {', '.join(shown)}"
                if shown else "")
        tail += f"; {silent} without a verdict" if silent else ""
        sentences.append(head + tail + ".")
    primaries = [v for v in verdicts if v.role == "primary" and not v.verdict]
    if primaries and all(v.seeds[0] < 2 or v.seeds[1] < 2 for v in primaries):
        sentences.append("With one seed per arm these are differences between runs, not architectures.")
    return " ".join(sentences)


def _cell(verdict: Verdict, compact: bool) -> str:
    word = verdict.verdict or "–"
    if compact:
        return f"{verdict.difference:+.2f} {word}"
    return f"{verdict.difference:+.2f} {verdict.interval()} {word}"


def verdict_frame(verdicts: list[Verdict], correction: str = "holm",
                  tags: dict[str, str] | None = None) -> pd.DataFrame:
    """Two arms: one row per metric with difference, interval, p, adjusted p, verdict, why no verdict
    and seeds needed. More arms: one column per compared arm (difference and verdict; the intervals are
    in verdicts.csv)."""
    arms = list(dict.fromkeys(v.arm for v in verdicts))
    adjusted = f"p ({CORRECTION_NAMES[correction]})"
    if len(arms) == 1:
        return pd.DataFrame([{
            "metric": v.label, "role": v.role, "difference": f"{v.difference:+.2f}",
            "95% interval": v.interval(), "p": _p(v.p), adjusted: _p(v.p_adjusted),
            "verdict": v.verdict or "–", "why no verdict / method": v.reason or v.method,
            "seeds for 80% power": "–" if v.seeds_needed is None else str(v.seeds_needed)}
            for v in verdicts])
    tags = tags or {}
    rows: dict[str, dict[str, str]] = {}
    for v in verdicts:
        row = rows.setdefault(v.label, {"metric": v.label, "role": v.role})
        row[tags.get(v.arm, v.arm)] = _cell(v, compact=True)
        reasons = row.setdefault("why no verdict", "")
        if v.reason and v.reason not in reasons:
            row["why no verdict"] = "; ".join(filter(None, [reasons, v.reason]))
    frame = pd.DataFrame(list(rows.values())).fillna("–")
    return frame[[c for c in frame.columns if c != "why no verdict"] + ["why no verdict"]]


def _p(value: float) -> str:
    if math.isnan(value):
        return "–"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def verdicts_csv_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """Every comparison with every number (verdicts.csv)."""
    return pd.DataFrame([{"metric": v.metric, "label": v.label, "role": v.role, "arm": v.arm,
                          "baseline": v.baseline, "arm_mean": v.means[0], "baseline_mean": v.means[1],
                          "arm_seeds": v.seeds[0], "baseline_seeds": v.seeds[1], "difference": v.difference,
                          "ci95_low": v.low, "ci95_high": v.high, "p": v.p, "p_adjusted": v.p_adjusted,
                          "verdict": v.verdict, "reason": v.reason, "method": v.method,
                          "min_difference": v.min_difference, "seed_sd": v.spread,
                          "seeds_needed_80pct": v.seeds_needed, "samples_seen": v.budget}
                         for v in verdicts])
