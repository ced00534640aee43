"""In-training zero-shot: --imagenet-val scores ImageNet next to the toy set through the benchmark's own
code (the logged numbers are the benchmark's on the saved weights), and a bad path is refused up front."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from open_clip.transform import image_transform

from benchmarks.data.imagenet import imagefolder_batches
from benchmarks.data.shards import EvalLoader, eval_dataset
from benchmarks.encoder import load_our_model
from benchmarks.evaluations import zero_shot_eval
from benchmarks.toy_zeroshot import toy_val_spec
from benchmarks.zeroshot_classifier import TEMPLATE_SETS
from launch import train
from launch.config import EVAL_TEMPLATES, parse_experiment

EVAL_SAMPLES = 32


def _args(runs: Path, name: str, *extra: str) -> list[str]:
    return ["--tower", "mixer", "--steps", "2", "--warmup-steps", "1", "--batch-size", "16", "--workers", "0",
            "--eval-samples", str(EVAL_SAMPLES), "--runs-dir", str(runs), "--name", name, *extra]


def test_imagenet_is_scored_next_to_toy_with_the_benchmarks_numbers(tmp_path, shared_data, monkeypatch):
    data = shared_data / "imagenet_samples"
    # one template instead of 7: the 1000-class classifier is the cost of this test, not what it checks
    monkeypatch.setitem(TEMPLATE_SETS, "simple", TEMPLATE_SETS["simple"][:1])
    assert train.main(_args(tmp_path, "run", "--imagenet-val", str(data), "--eval-templates", "simple")) == 0
    run_dir = tmp_path / "run"
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert logged["step"] == 2 and logged["eval/imagenet_n"] == logged["eval/toy_n"] == EVAL_SAMPLES
    assert json.loads((run_dir / "final_eval.json").read_text())["eval/imagenet_top1"] == logged[
        "eval/imagenet_top1"]
    imagenet = {key: logged[f"eval/imagenet_{key}"] for key in ("top1", "top5", "top1_ci95")}
    assert 0 <= imagenet["top1"] <= imagenet["top5"] <= 100
    assert imagenet["top1_ci95"][0] <= imagenet["top1"] <= imagenet["top1_ci95"][1]
    # both sets go through one loop; on toy (a cheap classifier) the benchmark, run separately on the
    # final checkpoint, gives the logged numbers exactly
    encoder = load_our_model(str(run_dir), "cpu")
    expected = zero_shot_eval(encoder, "toy", limit=EVAL_SAMPLES, progress=False)
    for key in ("top1", "top5", "mean_per_class_recall", "top1_ci95", "shape_acc"):
        assert logged[f"eval/toy_{key}"] == expected[key]


def test_bad_imagenet_val_exits_2_before_training(tmp_path, capsys):
    assert train.main(_args(tmp_path, "bad", "--imagenet-val", str(tmp_path / "missing"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--imagenet-val" in err[0] and "ILSVRC val layout" in err[0]
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_eval_templates_flag_offers_the_benchmarks_sets():
    assert set(EVAL_TEMPLATES) == set(TEMPLATE_SETS)
    _, options = parse_experiment(["--eval-templates", "simple", "--imagenet-val", "x"])
    assert options.eval_templates == "simple" and options.imagenet_val == "x"
    with pytest.raises(SystemExit):
        parse_experiment(["--eval-templates", "fancy"])


@pytest.mark.parametrize("flags, fragment", [
    (["--evals", "toy,imagenet"], "imagenet needs its data"),  # imagenet chosen, no --imagenet-val
    (["--evals", "toy,cifar"], "'cifar': not a zero-shot set; expected one of toy, imagenet"),
])
def test_evals_by_name_are_checked_by_the_runners_code_before_training(tmp_path, capsys, flags, fragment):
    assert train.main(_args(tmp_path, "bad", *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_eval_sets_are_resolved_once_per_run_not_at_every_eval(tmp_path, monkeypatch):
    calls = []
    resolve = train.eval_set
    monkeypatch.setattr(train, "eval_set", lambda *args: calls.append(args) or resolve(*args))
    assert train.main(_args(tmp_path, "run", "--eval-every", "1")) == 0  # evals at step 1 and the end
    evals = [line for line in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if "eval/toy_top1" in line]
    assert [line["step"] for line in evals] == [1, 2]
    assert [args[0] for args in calls] == ["toy"]  # at start-up only (it stats and globs on every rank)


def _sigterm_every_worker_midway(batches) -> int:
    """Iterate `batches`, sending SIGTERM (as SLURM does to every process of a step) to each DataLoader
    worker after the first batch; the number of batches seen."""
    children = {child.pid for child in psutil.Process().children()}
    seen = 0
    for _ in batches:
        seen += 1
        if seen == 1:
            workers = [child for child in psutil.Process().children() if child.pid not in children]
            assert workers, "no DataLoader worker started"
            for worker in workers:
                os.kill(worker.pid, signal.SIGTERM)
                os.kill(worker.pid, signal.SIGUSR1)
            time.sleep(0.5)  # delivered before the next batches are asked for
    return seen


def test_eval_loader_workers_outlive_sigterm_and_sigusr1(shared_data, private_cache):
    # a preemption during an in-training eval: the trainer checkpoints at its next step; the eval's
    # workers must not die first (that would end the run instead of requeuing it)
    preprocess = image_transform(64, is_train=False)
    loader, n = imagefolder_batches(shared_data / "imagenet_samples", preprocess, batch_size=4, workers=1,
                                    limit=40)
    assert _sigterm_every_worker_midway(loader) == -(-n // 4) == 10
    val = toy_val_spec(None).val
    shards = EvalLoader(eval_dataset(val, preprocess, batch_size=2, with_class=True), workers=1)
    assert _sigterm_every_worker_midway(shards) > 2
