"""Result files: a measurement never overwrites a different one (the name carries the data set,
template set and limit), and the anchors' schemas are written next to ours and read back by the
anchors' own code (CLIP_benchmark's `build`, mteb's `TaskResult.from_disk`)."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from benchmarks import imagenet_zeroshot, sts
from benchmarks.provenance import data_label, result_name
from benchmarks.zeroshot_classifier import TEMPLATE_SETS

CLASSES = 4


def _imagenet_folders(shared_data, root):
    """The first CLASSES classes of the shared samples as ILSVRC val (imagenet/val/<wnid>) and as
    ImageNetV2 (imagenetv2-matched-frequency/<index>) folders."""
    wnids = sorted(p.name for p in (shared_data / "imagenet_samples").iterdir() if p.is_dir())[:CLASSES]
    val, v2 = root / "imagenet" / "val", root / "imagenetv2-matched-frequency"
    for index, wnid in enumerate(wnids):
        (val / wnid).mkdir(parents=True)
        (v2 / str(index)).mkdir(parents=True)
        for image in (shared_data / "imagenet_samples" / wnid).iterdir():
            (val / wnid / image.name).symlink_to(image.resolve())
            (v2 / str(index) / image.name).symlink_to(image.resolve())
    return val, v2


def test_data_label_names_the_data_not_the_generic_folder(tmp_path):
    assert data_label("/data/imagenet/val", "imagenet") == "imagenet-val"
    assert data_label("imagenetv2-matched-frequency", "imagenet") == "imagenetv2-matched-frequency"
    assert data_label("/data/in1k/val/{00000..00063}.tar", "imagenet") == "in1k-val"
    assert data_label(None, "toy") == "toy"
    assert result_name("mixer-B-32", "imagenet-val", None, "limit100") == "mixer-B-32__imagenet-val__limit100"


def test_imagenet_v2_templates_and_limit_runs_keep_the_val_result(tmp_path, shared_data, monkeypatch):
    # 2 templates per set keep the 1,000-class classifier cheap; the file names are what is tested
    monkeypatch.setitem(TEMPLATE_SETS, "openai", TEMPLATE_SETS["openai"][:2])
    monkeypatch.setitem(TEMPLATE_SETS, "simple", TEMPLATE_SETS["simple"][:1])
    val, v2 = _imagenet_folders(shared_data, tmp_path)
    common = ["--model", "mixer-tiny", "--results-dir", str(tmp_path / "scores"), "--batch-size", "8"]
    runs = {"mixer-tiny-random__imagenet-val": ["--data", str(val)],
            "mixer-tiny-random__imagenetv2-matched-frequency": ["--data", str(v2)],
            "mixer-tiny-random__imagenet-val__templates-simple": ["--data", str(val),
                                                                  "--templates", "simple"],
            "mixer-tiny-random__imagenet-val__limit2": ["--data", str(val), "--limit", "2"]}
    records = {name: imagenet_zeroshot.main(common + argv) for name, argv in runs.items()}
    folder = tmp_path / "scores" / "imagenet_zeroshot"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(runs)
    for name, record in records.items():
        written = json.loads((folder / f"{name}.json").read_text())
        assert written["settings"] == record["settings"] and written["metrics"]["n"] == record["metrics"]["n"]
    assert records["mixer-tiny-random__imagenet-val__limit2"]["metrics"]["n"] == 2
    assert records["mixer-tiny-random__imagenet-val"]["metrics"]["n"] == CLASSES

    # CLIP_benchmark's own `build` reads the siblings into its CSV, fractions where ours are percent
    siblings = folder / "clip_benchmark"
    assert len(list(siblings.glob("*_en_zeroshot_classification.json"))) == len(runs)
    from clip_benchmark.cli import main_build

    main_build(argparse.Namespace(files=[str(siblings)], output=str(tmp_path / "benchmark.csv")))
    with open(tmp_path / "benchmark.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["acc1"]) for row in rows) == pytest.approx(
        sorted(record["metrics"]["top1"] / 100 for record in records.values()))
    v2_name = "mixer-tiny-random__imagenetv2-matched-frequency"
    v2_dump = json.loads((siblings / f"{v2_name}_en_zeroshot_classification.json").read_text())
    ours = records[v2_name]["metrics"]
    assert v2_dump["dataset"] == "imagenetv2" and v2_dump["task"] == "zeroshot_classification"
    assert v2_dump["metrics"]["acc1"] == pytest.approx(ours["top1"] / 100)
    assert v2_dump["metrics"]["acc5"] == pytest.approx(ours["top5"] / 100)
    assert v2_dump["metrics"]["mean_per_class_recall"] == pytest.approx(ours["mean_per_class_recall"] / 100)


def test_sts_writes_mteb_task_results_that_mteb_reads_back(tmp_path, shared_data):
    from mteb.results import TaskResult

    record = sts.main(["--model", "mixer-tiny", "--sets", "STS16", "SICK-R", "--limit", "50",
                       "--data", str(shared_data), "--results-dir", str(tmp_path)])
    name = "mixer-tiny-random__sets-STS16+SICK-R__limit50"
    assert (tmp_path / "sts" / f"{name}.json").is_file()
    for task in ("STS16", "SICK-R"):
        result = TaskResult.from_disk(tmp_path / "sts" / "mteb" / name / f"{task}.json")
        assert result.task_name == task
        percent = record["metrics"]["sets"][task]["cosine_spearman"]
        assert result.get_score() == pytest.approx(percent / 100, abs=1e-6)  # mteb rounds to 1e-6
        assert result.scores["test"][0]["cosine_pearson"] == pytest.approx(
            record["metrics"]["sets"][task]["cosine_pearson"] / 100, abs=1e-6)
