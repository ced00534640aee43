"""Our results in the anchors' schemas, written next to our own JSON so their tools read them as is.

    CLIP_benchmark   <results-dir>/<benchmark>/clip_benchmark/<result name>_en_<task>.json: its
                     `clip_benchmark eval` dump ({dataset, model, pretrained, task, metrics, language}),
                     metrics as fractions (acc1, acc5, mean_per_class_recall; image_retrieval_recall@k,
                     text_retrieval_recall@k), readable by `clip_benchmark build` into its CSV
    MTEB             <results-dir>/sts/mteb/<result name>/<Task>.json: mteb's own TaskResult, written by
                     mteb (`TaskResult.from_task_results(...).to_disk`), scores as fractions; read back
                     with `mteb.results.TaskResult.from_disk`

Our own files keep their schema and percent; these are siblings (a folder the report does not read).
The runners call these through `benchmarks.provenance.finish(..., anchor_writer=...)`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from runfolder import atomic_write_text

CLIP_BENCHMARK_FOLDER = "clip_benchmark"
MTEB_FOLDER = "mteb"
LANGUAGE = "en"  # every prompt and caption set here is English
# CLIP_benchmark's retrieval names the retrieved side: "image_retrieval" is text -> image (our t2i).
RETRIEVAL_KEYS = {"t2i": "image_retrieval_recall@{k}", "i2t": "text_retrieval_recall@{k}"}


def _fraction(percent: Any) -> float | None:
    return None if percent is None else float(percent) / 100


def clip_benchmark_dataset(record: dict[str, Any]) -> str:
    """CLIP_benchmark's name for the data set where one is the same data (imagenet1k, imagenetv2,
    mscoco_captions), else our data label."""
    settings, benchmark = record.get("settings", {}), record["benchmark"]
    if benchmark == "toy_zeroshot" or settings.get("dataset") == "toy":
        return "mixclip_toy"
    if benchmark == "imagenet_zeroshot":
        data = str(settings.get("data") or "").lower()
        return "imagenetv2" if "imagenetv2" in data else "imagenet1k"
    return "mscoco_captions" if "coco" in str(settings.get("data") or "").lower() else "captions"


def _pretrained(record: dict[str, Any]) -> str:
    model = record.get("model") or {}
    return str(model.get("checkpoint") or model.get("pretrained") or model.get("run_dir") or "")


def clip_benchmark_record(record: dict[str, Any]) -> dict[str, Any]:
    """One of our zero-shot or retrieval results as CLIP_benchmark's eval dump."""
    metrics = record["metrics"]
    if record["benchmark"] in ("imagenet_zeroshot", "toy_zeroshot"):
        task = "zeroshot_classification"
        converted = {"acc1": _fraction(metrics["top1"]), "acc5": _fraction(metrics["top5"]),
                     "mean_per_class_recall": _fraction(metrics["mean_per_class_recall"])}
    elif record["benchmark"] == "retrieval":
        task = "zeroshot_retrieval"
        converted = {template.format(k=k): _fraction(metrics[f"{direction}_R@{k}"])
                     for direction, template in RETRIEVAL_KEYS.items() for k in (1, 5, 10)}
    else:
        raise ValueError(f"{record['benchmark']}: no CLIP_benchmark task for this benchmark")
    return {"dataset": clip_benchmark_dataset(record), "model": record["model_id"],
            "pretrained": _pretrained(record), "task": task, "metrics": converted, "language": LANGUAGE}


def write_clip_benchmark(record: dict[str, Any], result_path: Path) -> list[Path]:
    """CLIP_benchmark's file next to ours (same name stem, so it never overwrites another measurement)."""
    dump = clip_benchmark_record(record)
    path = result_path.parent / CLIP_BENCHMARK_FOLDER / f"{result_path.stem}_{LANGUAGE}_{dump['task']}.json"
    return [atomic_write_text(path, json.dumps(dump, indent=2) + "\n")]


def write_mteb(record: dict[str, Any], result_path: Path) -> list[Path]:
    """One mteb TaskResult file per STS set (scores as fractions; MTEB's main score cosine_spearman)."""
    import mteb
    from mteb.results import TaskResult

    folder = result_path.parent / MTEB_FOLDER / result_path.stem
    date = dt.datetime.fromisoformat(record["date"]) if record.get("date") else None
    written = []
    for name, scores in record["metrics"]["sets"].items():
        task = mteb.get_task(name)
        converted = {"cosine_spearman": _fraction(scores["cosine_spearman"]),
                     "cosine_pearson": _fraction(scores["cosine_pearson"]),
                     "main_score": _fraction(scores["cosine_spearman"])}
        result = TaskResult.from_task_results(task, {"test": {"default": converted}},
                                              evaluation_time=None, date=date)
        path = folder / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        result.to_disk(path)
        written.append(path)
    return written
