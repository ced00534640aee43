"""The untrained baseline (`--untrained`): a run's architecture at the initial weights its trainer drew,
scored like the trained run, and never taken for the trained run's score by the report."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate.utils import set_seed

import towers
from benchmarks import sts
from benchmarks.encoder import load_encoder
from launch.config import experiment_dict, parse_experiment
from results.runs import load_runs
from results.scores import load_scores, owner_run


def fake_run(tmp_path, *flags: str):
    """A run folder holding only what the trainer writes first, config.json (no checkpoint)."""
    experiment, _ = parse_experiment(list(flags))
    run = tmp_path / f"run-{'-'.join(f.strip('-') for f in flags)}"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(
        {"name": run.name, "model_name": "x", "experiment": experiment_dict(experiment),
         "recipe_sha256": "abc", "flops_per_sample": {"train_gflops": 1.0}}))
    return run, experiment


@pytest.mark.parametrize("flags", [("--tower", "mixer", "--seed", "10"),
                                   ("--tower", "transformer", "--seed", "11", "--text-mask", "causal"),
                                   ("--image-tower", "mixer", "--text-tower", "transformer", "--seed", "3")])
def test_the_untrained_model_is_the_trainers_initial_model(tmp_path, flags):
    run, experiment = fake_run(tmp_path, *flags)
    encoder = load_encoder(model=str(run), untrained=True, device="cpu")
    # what launch/train.py does before its first step
    set_seed(experiment.recipe.seed)
    reference = towers.build_model(**experiment.model_kwargs())
    theirs, ours = reference.state_dict(), encoder.model.state_dict()
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[name], ours[name]) for name in theirs)
    assert encoder.model.model_config == reference.model_config
    assert encoder.info["init_seed"] == experiment.recipe.seed and "run_dir" not in encoder.info
    # another seed draws other weights: the seed is what makes it this run's baseline
    set_seed(experiment.recipe.seed + 1)
    other = towers.build_model(**experiment.model_kwargs()).state_dict()
    assert not all(torch.equal(other[name], ours[name]) for name in ours)


def test_untrained_sts_score_is_written_apart_from_the_runs(tmp_path, shared_data, capsys):
    run, _ = fake_run(tmp_path, "--tower", "mixer", "--seed", "10")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 640, "samples_seen": 81920, "loss": 1.0}) + "\n")
    (run / "final_eval.json").write_text(json.dumps({"step": 640, "eval/toy_top1": 50.0}))
    scores_dir = tmp_path / "scores"
    record = sts.main(["--model", str(run), "--untrained", "--sets", "STS12", "--limit", "50",
                       "--data", str(shared_data), "--results-dir", str(scores_dir), "--device", "cpu"])
    # the file name carries the sets and the limit too: a subset never overwrites the full score
    written = scores_dir / "sts" / f"{run.name}-untrained__sets-STS12__limit50.json"
    assert json.loads(written.read_text())["model"]["source"] == "untrained run architecture"
    assert -100 <= record["metrics"]["main_score"]["STS12"] <= 100
    # the report's owner rule must not give this score to the trained run
    score, = load_scores(scores_dir)
    assert owner_run(score, load_runs([run])) is None


def test_untrained_needs_a_run(shared_data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sts.main(["--model", "mixer-tiny", "--untrained", "--data", str(shared_data)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--untrained" in err
