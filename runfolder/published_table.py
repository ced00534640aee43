"""A published-results table (the CSV of open CLIP-family training runs): its columns, its rows, its reader
and the curve it gives at any samples seen. The format's one owner, torch-free, so training's end-of-run
anchor line and the report read it alike; `results.published` builds the packaged table.

    from runfolder.published_table import PACKAGED, load_table, select, value_at
    rows = select(load_table(PACKAGED), family="clip", model="ViT-B-32", dataset="datacomp_1b")
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runfolder.errors import ReportInputError

# the packaged table ships with the report (results/published/, provenance in its README)
PACKAGED = Path(__file__).resolve().parents[1] / "results" / "published" / "published_results.csv"
COLUMNS = ("family", "model", "dataset", "schedule", "samples_seen", "benchmark", "metric", "value", "source",
           "gflops_per_sample")
SOURCES = {
    "nezhurina2025": "Nezhurina et al. 2025, Scaling Laws for Robust Comparison of Open Foundation "
                     "Language-Vision Models and Datasets, arXiv:2506.04598 "
                     "(LAION-AI/scaling-laws-for-comparison)",
    "gadre2023": "Gadre et al. 2023, DataComp: In search of the next generation of multimodal datasets, "
                 "arXiv:2304.14108 (open_clip docs/datacomp_models.md)",
}
# Training FLOPs per sample = 3 x forward (forward + backward), the convention of the toy sweep's compute.
TRAIN_PER_FORWARD = 3.0


@dataclass(frozen=True)
class Row:
    family: str
    model: str
    dataset: str
    schedule: str
    samples_seen: int
    benchmark: str
    metric: str
    value: float  # percent
    source: str
    gflops_per_sample: float | None  # forward

    @property
    def train_flops(self) -> float | None:
        """Training FLOPs of the run: 3 x forward GFLOPs per sample x samples seen x 1e9."""
        if self.gflops_per_sample is None:
            return None
        return TRAIN_PER_FORWARD * self.gflops_per_sample * 1e9 * self.samples_seen


def load_table(path: str | Path = PACKAGED) -> list[Row]:
    """The rows of a published-results table; a malformed file is a one-line ReportInputError."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS[:-1] if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportInputError(f"{path}: missing columns {missing}; expected {', '.join(COLUMNS)}")
            rows = []
            for number, raw in enumerate(reader, start=2):
                try:
                    flops = (raw.get("gflops_per_sample") or "").strip()
                    rows.append(Row(raw["family"], raw["model"], raw["dataset"], raw["schedule"],
                                    int(raw["samples_seen"]), raw["benchmark"], raw["metric"],
                                    float(raw["value"]), raw["source"], float(flops) if flops else None))
                except (TypeError, ValueError):
                    raise ReportInputError(f"{path}: line {number}: expected an integer samples_seen and "
                                           f"numeric value / gflops_per_sample, got {raw}") from None
    except FileNotFoundError:
        raise ReportInputError(f"{path}: no such published-results table") from None
    except UnicodeDecodeError:
        raise ReportInputError(f"{path}: not a text CSV file") from None
    return rows


def select(rows: list[Row], **fields) -> list[Row]:
    """The rows whose fields equal every given value (None: any)."""
    return [r for r in rows if all(v is None or getattr(r, k) == v for k, v in fields.items())]


def curve(rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    """(samples seen, value) of one published curve, by samples seen; one model on one dataset."""
    keys = {(r.family, r.model, r.dataset, r.schedule, r.benchmark, r.metric) for r in rows}
    if len(keys) != 1:
        raise ValueError(f"a curve is one (family, model, dataset, schedule, benchmark, metric), got {keys}")
    ordered = sorted(rows, key=lambda r: r.samples_seen)
    return np.array([r.samples_seen for r in ordered], float), np.array([r.value for r in ordered])


def value_at(rows: list[Row], samples_seen: float) -> float | None:
    """The published value at `samples_seen`, linear in log samples between the two published points
    around it; None outside the published range (no extrapolation)."""
    samples, values = curve(rows)
    if not samples[0] <= samples_seen <= samples[-1]:
        return None
    return float(np.interp(np.log(samples_seen), np.log(samples), values))
