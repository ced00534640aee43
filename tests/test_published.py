"""Published results as data: the packaged table equals its shared source row for row, the loader refuses
malformed tables in one line, and a run is anchored to the published curve: a broken baseline is flagged,
a run with no published counterpart says so."""

from __future__ import annotations

import csv
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from results.anchors import anchor_lines, anchor_run, margin_for, report_anchors
from results.published import PACKAGED, from_nezhurina, load_table, select, value_at
from results.runs import ReportInputError, load_run
from runfolder import RunFolder
from runfolder.records import final_eval_record, write_json

REPO = PACKAGED.parents[2]


def test_packaged_table_equals_the_shared_source_rows(shared_data):
    source = shared_data / "published"
    packaged = load_table()
    expected = from_nezhurina(source / "nezhurina2025_results.csv",
                              source / "nezhurina2025_model_profile.csv")
    assert [r for r in packaged if r.source == "nezhurina2025"] == expected
    # independent of the converter: every shared imagenet1k row, value x 100, is in the package
    with (source / "nezhurina2025_results.csv").open() as handle:
        raw = [r for r in csv.DictReader(handle) if r["benchmark"] == "imagenet1k"]
    assert len(raw) == len(expected) == 694
    packed = {(r.family, r.model, r.dataset, r.schedule, r.samples_seen): r.value for r in packaged}
    for row in raw:
        key = (row["family"], row["model"], row["pretrain_dataset"], row["lr_scheduler"],
               int(row["samples_seen"]))
        assert packed[key] == pytest.approx(100 * float(row["value"]), abs=1e-9)
    assert all(r.gflops_per_sample for r in packaged)  # every model has its profile's GFLOPs
    b32 = select(packaged, family="clip", model="ViT-B-32", dataset="datacomp_1b", schedule="cosine")
    assert {r.gflops_per_sample for r in b32} == {14.54}


def test_datacomp_rows_are_the_numbers_the_docs_quote():
    docs = (REPO / "docs" / "results" / "published.md").read_text()
    rows = select(load_table(), source="gadre2023")
    assert len(rows) == 14
    for row in rows:
        assert f"{row.value:.1f}%" in docs


def test_a_malformed_table_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("family,model,value\nclip,ViT-B-32,50\n")
    with pytest.raises(ReportInputError, match=r"bad\.csv: missing columns"):
        load_table(bad)
    header = PACKAGED.read_text().splitlines()[0]
    bad.write_text(header + "\nclip,ViT-B-32,x,cosine,many,imagenet1k,acc1,5,s,1\n")
    with pytest.raises(ReportInputError, match="line 2: expected an integer samples_seen"):
        load_table(bad)
    done = subprocess.run([sys.executable, "-m", "results.published", "show", "--table",
                           str(tmp_path / "none.csv"), "--family", "clip", "--model", "ViT-B-32",
                           "--dataset", "datacomp_1b"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "none.csv" in done.stderr


def b32(samples: int, data: str, towers=("transformer", "transformer"), schedule="cosine") -> dict:
    recipe = {"global_batch_size": 4096, "steps": samples // 4096, "train_data": data,
              "lr_schedule": schedule}
    experiment = {"image_tower": towers[0], "text_tower": towers[1], "variant": "B/32", "recipe": recipe}
    return {"name": "run", "experiment": experiment, "recipe_identity": recipe}


def test_published_value_is_interpolated_on_log_samples():
    rows = select(load_table(), family="clip", model="ViT-B-32", dataset="relaion2b-en", schedule="cosine")
    samples = np.array(sorted(r.samples_seen for r in rows), float)
    values = {r.samples_seen: r.value for r in rows}
    assert value_at(rows, 307_200_000) == values[307_200_000]
    low, high = 307_200_000, 640_000_000
    middle = np.sqrt(low * high)  # halfway on log samples: the mean of the two published values
    assert value_at(rows, middle) == pytest.approx((values[low] + values[high]) / 2)
    assert value_at(rows, samples[0] / 2) is None and value_at(rows, samples[-1] * 2) is None


def test_a_broken_baseline_is_flagged_and_a_faithful_one_is_not():
    # LAION-400M B/32 recipe: 100k steps of 4096 = 409.6M samples, between the 307.2M and 640M points
    broken = anchor_run(b32(409_600_000, "/data/laion400m/{00000..41407}.tar"), 2.3)
    assert broken.curve.startswith("ViT-B-32 on relaion2b-en") and 44.0 < broken.published < 51.2
    assert broken.flagged and broken.gap == pytest.approx(broken.published - 2.3)
    line = broken.summary()
    assert line.startswith(f"WARNING: this baseline is {broken.gap:.1f} points under open CLIP at the same "
                           "samples seen (run: 2.3% vs")
    assert "check the recipe before reading the comparison" in line
    lines = anchor_lines([broken])
    assert lines[0] == f"> **{line}**" and "FLAGGED" in lines[-2]
    fine = anchor_run(b32(409_600_000, "/data/laion400m/{00000..41407}.tar"), broken.published - 2.0)
    assert not fine.flagged and "within the" in fine.summary() and margin_for(broken.published) > 3.0
    # DataComp small on its own pool: 12.8M samples seen, the pool's published 2.5-5.1%, not DataComp-1.4B's
    small = anchor_run(b32(12_800_000, "/data/datacomp/small"), 3.4)
    assert small.curve.startswith("ViT-B-32 on datacomp_pool_basic") and small.published == 3.0
    assert not small.flagged and anchor_run(b32(12_800_000, "/data/datacomp/small"), 0.1).gap == 2.9
    # past the last published point: the last value, as a lower bound
    long = anchor_run(b32(4096 * 1_000_000, "/data/datacomp_1b/{0..9}.tar"), 30.0)
    assert long.published == 65.3 and "lower bound" in long.reason and long.flagged


def test_a_run_with_no_published_counterpart_gets_no_anchor_and_says_why():
    toy = anchor_run(b32(102_400, {"toy_seed": 0, "toy_version": 5}), None)
    assert toy.published is None and not toy.flagged
    assert "no published counterpart: the toy data set" in toy.summary()
    mixer = anchor_run(b32(409_600_000, "/data/laion400m/x.tar", towers=("mixer", "mixer")), 2.3)
    assert mixer.published is None and "Transformer CLIPs" in mixer.summary() and not mixer.flagged
    unknown = anchor_run(b32(409_600_000, "/data/cc12m/x.tar"), 20.0)
    assert "neither DataComp nor LAION-family" in unknown.summary()
    early = anchor_run(b32(409_600, "/data/laion400m/x.tar"), 0.5)
    assert early.published is None and "under the published range" in early.reason
    unscored = anchor_run(b32(409_600_000, "/data/laion400m/x.tar"), None)
    assert unscored.published is None and "no ImageNet zero-shot score" in unscored.summary()
    assert "| none: " in anchor_lines([toy])[-2]


def test_the_comparison_report_warns_first_and_draws_the_runs_on_the_published_curves(tmp_path):
    laion = "/data/laion400m/{00000..41407}.tar"
    runs = [SimpleNamespace(config=b32(409_600_000, laion), final_eval={"imagenet_top1": 2.3},
                            train_gflops=3 * 14.54),
            SimpleNamespace(config={**b32(409_600_000, laion, towers=("mixer", "mixer")), "name": "mixer"},
                            final_eval={"imagenet_top1": 40.0}, train_gflops=3 * 12.0)]
    warnings, blocks = report_anchors(runs, tmp_path)
    assert len(warnings) == 1 and warnings[0].startswith("this baseline is 44.5 points under open CLIP")
    assert blocks[1][0] == "table" and list(blocks[1][1]["anchor"].str[:7]) == ["FLAGGED", "none: t"]
    assert blocks[2] == ("figure", ("anchors.png", "runs (stars) on the published error-vs-compute curves"))
    assert (tmp_path / "anchors.png").stat().st_size > 10_000


def test_training_end_of_run_line_places_the_run_and_never_raises(tmp_path):
    import json

    from results.anchors import end_of_run_line

    run = tmp_path / "b32"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(b32(409_600_000, "/data/laion400m/{00000..41407}.tar")))
    (run / "final_eval.json").write_text(json.dumps({"step": 100000, "eval/imagenet_top1": 2.3}))
    assert end_of_run_line(run).startswith("WARNING: this baseline is 44.5 points under open CLIP")
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "config.json").write_text(json.dumps(b32(102_400, {"toy_seed": 0, "toy_version": 5})))
    assert "no published counterpart: the toy data set" in end_of_run_line(toy)
    assert end_of_run_line(tmp_path / "missing").startswith("anchor: not available (")


def test_a_run_folders_final_imagenet_score_reaches_its_anchor(tmp_path):
    """The score is read from the run as the report loads it (final_eval.json through runfolder)."""
    run = RunFolder(tmp_path / "vit-b32")
    config = {**b32(409_600_000, "/data/laion400m/{00000..41407}.tar"), "recipe_sha256": "ab" * 32,
              "model_name": "transformer-B-32", "flops_per_sample": {"train_gflops": 3 * 14.54}}
    write_json(run.config, config)
    run.metrics.write_text('{"step": 100000, "samples_seen": 409600000, "loss": 2.0}\n')
    write_json(run.final_eval, final_eval_record(100000, {"eval/imagenet_top1": 2.3}))
    warnings, _ = report_anchors([load_run(run.path)], tmp_path)
    assert len(warnings) == 1 and "(run: 2.3% vs" in warnings[0]
