"""The scaling comparison's headline: the measured matched cells, before any law.

A matched cell is one (size, budget) both families trained: the same model size name and the same samples
seen. Per cell: each family's seed-mean error, the difference (second family minus first, alphabetical:
transformer minus mixer, mammut minus clip), its 95% Welch interval over seeds (scipy; each family needs
>= 2 seeds with some spread) and whether every seed of one family is worse than every seed of the other.

    from results.scaling_cells import matched_cells, cells_sentence
    cells = matched_cells({"mixer": points, "transformer": points})   # points as results.scaling_fit takes
    print(cells_sentence(cells))

Reads numbers only (numpy; the interval is results.significance's); no model code.
"""

from __future__ import annotations

import numpy as np

from results.significance import welch_interval


def _welch(second: np.ndarray, first: np.ndarray) -> tuple[float, float]:
    """The report's 95% Welch interval of second - first; NaN where the seeds cannot give one."""
    if len(second) < 2 or len(first) < 2 or (np.ptp(second) == 0 and np.ptp(first) == 0):
        return float("nan"), float("nan")
    _, low, high = welch_interval(list(second), list(first))
    return low, high


def matched_cells(points: dict[str, list[dict]]) -> dict:
    """{families, cells: [{size, budget, compute: {family: FLOPs}, errors: {family: [...]}, mean,
    difference, interval, separated}]}, cells by budget then size."""
    first, second = sorted(points)
    keyed = {f: {(p["size"], p["budget"]): p for p in points[f]} for f in (first, second)}
    cells = []
    for key in sorted(set(keyed[first]) & set(keyed[second]), key=lambda k: (k[1], _size_order(k[0]))):
        a, b = (np.asarray(keyed[f][key]["errors"], dtype=float) for f in (first, second))
        cells.append({"size": key[0], "budget": key[1],
                      "compute": {f: float(keyed[f][key]["compute"]) for f in (first, second)},
                      "errors": {first: a.tolist(), second: b.tolist()},
                      "mean": {first: float(a.mean()), second: float(b.mean())},
                      "difference": float(b.mean() - a.mean()), "interval": _welch(b, a),
                      "separated": _separated(a, b)})
    return {"families": [first, second], "cells": cells}


def _separated(a: np.ndarray, b: np.ndarray) -> str | None:
    """The family every one of whose seeds is better than every seed of the other (>= 2 seeds each)."""
    if min(len(a), len(b)) < 2:
        return None
    return "first" if a.max() < b.min() else "second" if b.max() < a.min() else None


def _size_order(size: str) -> tuple:
    """w64 < w96 < w128; ViT names by their string (their compute orders them in the tables anyway)."""
    digits = "".join(ch for ch in size if ch.isdigit())
    return (0, int(digits), size) if size.startswith("w") and digits else (1, 0, size)


def cells_sentence(cells: dict) -> str:
    """The measured headline: where each family's error is lower, by how much, with seed-level support."""
    first, second = cells["families"]
    rows = cells["cells"]
    n = len(rows)
    lower = {first: [c for c in rows if c["difference"] > 0],
             second: [c for c in rows if c["difference"] < 0]}
    parts = []
    for family in (first, second):
        if lower[family]:
            gaps = [abs(c["difference"]) for c in lower[family]]
            parts.append(f"the {family}'s error is lower at {len(gaps)} of {n} matched (size, budget) cells, "
                         f"by {min(gaps):.1f} to {max(gaps):.1f} points")
    if not parts:
        parts.append(f"the two families' errors are equal at all {n} matched cells")
    seeds = {f: sorted({len(c["errors"][f]) for c in rows}) for f in (first, second)}
    with_interval = [c for c in rows if not np.isnan(c["interval"][0])]
    if with_interval:
        excluding = sum(1 for c in with_interval if c["interval"][0] > 0 or c["interval"][1] < 0)
        separated = [f"every {worse} seed is worse than every {better} seed in "
                     f"{sum(c['separated'] == side for c in rows)} of {n}"
                     for better, worse, side in ((first, second, "first"), (second, first, "second"))
                     if any(c["separated"] == side for c in rows)]
        support = ("; ".join(separated or ["no cell has every seed of one family better than every seed of "
                                           "the other"])
                   + f"; the 95% Welch interval over seeds excludes 0 in {excluding} of "
                     f"{len(with_interval)} ("
                   + ", ".join(f"{f} {'/'.join(map(str, seeds[f]))} seeds" for f in (first, second)) + ")")
    else:
        support = "one run per family and cell: no seed-level interval"
    return f"Measured, {'; '.join(parts)}; {support}."


def cells_table(cells: dict) -> list[str]:
    """Markdown lines: one row per matched cell."""
    first, second = cells["families"]
    lines = [f"| size | samples seen | {first} | {second} | {second} minus {first} | 95% Welch (seeds) "
             "| every seed better |", "|---|---|---|---|---|---|---|"]
    for c in cells["cells"]:
        low, high = c["interval"]
        interval = "-" if np.isnan(low) else f"[{low:+.1f}, {high:+.1f}]"
        shown = {f: ", ".join(f"{e:.1f}" for e in c["errors"][f]) for f in (first, second)}
        lines.append(f"| {c['size']} | {c['budget']:,} | {c['mean'][first]:.1f} ({shown[first]}) | "
                     f"{c['mean'][second]:.1f} ({shown[second]}) | {c['difference']:+.1f} | {interval} | "
                     f"{ {'first': first, 'second': second}.get(c['separated'], '') } |")
    return lines
