"""The plateau target (results/scaling/sweep.yaml) and its report (results/plateau_report.py): the plan
(two chains of the default recipe, nothing else; the 1x branch is the default run, by recipe_sha256), the
report's numbers from run folders written through runfolder's writers, and one tiny real chain per
tower through the sweep driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from results.plateau_report import main as report_main
from results.scaling_spec import DEFAULT_SPEC, families, load_spec, plan, target, train_flags
from runfolder import RunFolder
from runfolder.records import ConfigRecord, final_eval_record, metrics_line, read_config, stamped, write_json

REPO = Path(__file__).resolve().parents[1]
BRANCHES = [(81_920, 640, 128, 512), (163_840, 1280, 256, 1024), (245_760, 1920, 384, 1536)]
NAMES = [f"{family}-w96-lr0.001-seed0-{end}" for family in ("transformer", "mixer")
         for end in ("trunk", "n81920", "n163840", "n245760")]


def sweep(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "results.drivers.scaling_sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_plateau_plan_is_two_trunks_of_1536_steps_and_six_cooldown_branches(tmp_path):
    spec = load_spec(DEFAULT_SPEC)
    t = target(spec, "plateau")
    best = {family: 1e-3 for family in families(spec)}
    tune, grid = plan(spec, t, "tune", tmp_path), plan(spec, t, "grid", tmp_path, best)
    assert [r.name for runs in grid for r in runs] == NAMES
    assert [[r.name for r in runs] for runs in tune] == [[r.name for r in runs] for runs in grid]
    assert plan(spec, t, "check", tmp_path, best) == []  # no branch-vs-fresh check: nothing else trains
    for trunk, *branches in grid:
        assert trunk.flags["steps"] == 1536 and trunk.flags["cooldown_steps"] == 0
        assert trunk.flags["keep_steps"] == [512, 1024, 1536]
        assert [(b.budget, b.flags["steps"], b.flags["cooldown_steps"], b.branch_step) for b in branches] \
            == BRANCHES
        for b in branches:
            assert b.flags["branch_from"] == str(RunFolder(tmp_path / trunk.name).checkpoint(b.branch_step))
        for run in (trunk, *branches):
            assert {k: run.flags[k] for k in ("variant", "lr", "seed", "batch_size", "warmup_steps",
                                              "precision", "lr_schedule", "eval_every")} == {
                "variant": "w96", "lr": 1e-3, "seed": 0, "batch_size": 128, "warmup_steps": 40,
                "precision": "bf16", "lr_schedule": "constant", "eval_every": 64}

    # the driver's dry run prints each of the 8 runs once (the tuning chain is the grid's), in order
    done = sweep("run", "--target", "plateau", "--out", str(tmp_path / "out"), "--dry-run")
    assert done.returncode == 0, done.stderr
    printed = [line.split("--name ")[1].split()[0] for line in done.stdout.splitlines()
               if line.startswith("+")]
    assert printed == NAMES


def test_the_1x_branch_has_the_default_runs_recipe(tmp_path):
    import torch

    from launch.config import parse_experiment
    from launch.data import data_identity

    spec = load_spec(DEFAULT_SPEC)
    t = target(spec, "plateau")
    default_run = read_config(REPO / "results" / "tuning" / "mixer" / "lr1e-3-warmup40" / "runs"
                              / "mixer-seed0" / "config.json")  # the committed default run, seed 0
    for trunk, first, *_ in plan(spec, t, "grid", tmp_path, {f: 1e-3 for f in families(spec)}):
        branch, _ = parse_experiment(train_flags(first.flags))
        default, _ = parse_experiment(["--tower", first.family, "--precision", "bf16", "--seed", "0"])
        assert branch == default  # towers, variant and every recipe field
        recipe, _, _ = branch.recipe.with_precision(torch.device("cpu"))
        assert recipe.sha256(1, data_identity(None)) == default_run.require("recipe_sha256")
        trunk_recipe, _ = parse_experiment(train_flags(trunk.flags))
        assert trunk_recipe.recipe.sha256(1, {}) != recipe.sha256(1, {})  # the trunk is not the default


# Known numbers (those docs/toy-protocol.md#plateau quotes): seen / held-out / val loss per budget, and
# the trunk's seen top-1 at steps 512 / 768 / 1024 / 1280 / 1536
KNOWN = {"transformer": {"budgets": [(60.2, 44.0, 0.804), (70.8, 53.1, 0.548), (74.5, 55.9, 0.480)],
                         "trunk": [41.2, 55.2, 55.1, 63.4, 67.1]},
         "mixer": {"budgets": [(65.1, 56.6, 0.671), (79.4, 69.4, 0.421), (86.0, 76.5, 0.306)],
                   "trunk": [59.0, 65.4, 70.3, 71.0, 78.3]}}


def _write_run(folder: Path, name: str, family: str, steps: int, cooldown: int, evals: dict[int, tuple]):
    """A finished run folder through runfolder's writers: config.json, metrics.jsonl, final_eval.json."""
    folder.mkdir(parents=True)
    recipe = {"steps": steps, "lr": 1e-3, "warmup_steps": 40, "precision": "bf16", "seed": 0,
              "lr_schedule": "constant", "cooldown_steps": cooldown, "global_batch_size": 128}
    ConfigRecord(
        name=name, model_name=f"{family}-w96", experiment={"image_tower": family, "text_tower": family,
                                                            "variant": "w96", "recipe": recipe},
        recipe_sha256=f"sha-{steps}-{cooldown}", recipe_identity=recipe, run_options={}, command="test",
        git_commit="abc1234", git_diff_sha256=None, versions={}, world_size=1, global_batch_size=128,
        device="cpu", torch_threads=1, cpu_capability="AVX512", precision={"resolved": "bf16"},
        device_settings={}, params={}, flops_per_sample={"train_gflops": 0.43}).write(folder / "config.json")
    lines = []
    for step, (seen, held_out, loss) in sorted(evals.items()):
        lines.append(metrics_line(stamped({"step": step, "samples_seen": 128 * step, "loss": 1.0}, 0, 0)))
        lines.append(metrics_line(stamped({"step": step, "samples_seen": 128 * step,
                                           "eval/toy_top1_seen": seen, "eval/toy_top1_held_out": held_out,
                                           "eval/toy_val_loss": loss}, 0, 0)))
    (folder / "metrics.jsonl").write_text("".join(lines))
    seen, held_out, loss = evals[steps]
    write_json(folder / "final_eval.json", final_eval_record(steps, {
        "eval/toy_top1_seen": seen, "eval/toy_top1_held_out": held_out, "eval/toy_val_loss": loss}))


def synthetic_sweep(out: Path) -> None:
    (out / "runs").mkdir(parents=True)
    (out / "lr_choice.json").write_text(json.dumps({"best_lr": {"transformer": 1e-3, "mixer": 1e-3}}))
    for family, known in KNOWN.items():
        stem = f"{family}-w96-lr0.001-seed0"
        trunk = {step: (seen, 0.0, 1.0) for step, seen in zip((512, 768, 1024, 1280, 1536), known["trunk"],
                                                              strict=True)}
        trunk.update({step: (1.0, 0.0, 1.0) for step in range(64, 1536, 64) if step not in trunk})
        _write_run(out / "runs" / f"{stem}-trunk", f"{stem}-trunk", family, 1536, 0, trunk)
        for (budget, steps, cooldown, point), numbers in zip(BRANCHES, known["budgets"], strict=True):
            curve = {step: (2.0, 1.0, 2.0) for step in range(point + 64, steps, 64)} | {steps: numbers}
            name = f"{stem}-n{budget}"
            _write_run(out / "runs" / name, name, family, steps, cooldown, curve)


def test_the_report_tables_each_budget_the_gains_the_trunk_and_the_difference(tmp_path, capsys):
    out = tmp_path / "plateau"
    synthetic_sweep(out)
    assert report_main(["--out", str(out)]) == 0
    text = (out / "report" / "plateau.md").read_text()
    for row in ("| transformer | 0 | 81,920 (1x) | 640 (128) | 60.2 | 44.0 | 0.804 |",
                "| transformer | 0 | 245,760 (3x) | 1920 (384) | 74.5 | 55.9 | 0.480 |",
                "| mixer | 0 | 163,840 (2x) | 1280 (256) | 79.4 | 69.4 | 0.421 |",
                # gains: the Transformer's shrink faster (10.6 then 3.7; held-out 9.1 then 2.8)
                "| transformer | 0 | 1x -> 2x | +10.6 | +9.1 | -0.256 |",
                "| transformer | 0 | 2x -> 3x | +3.7 | +2.8 | -0.068 |",
                "| mixer | 0 | 1x -> 2x | +14.3 | +12.8 | -0.250 |",
                "| mixer | 0 | 2x -> 3x | +6.6 | +7.1 | -0.115 |",
                "| tower | seed | step 512 | step 768 | step 1024 | step 1280 | step 1536 |",
                "| transformer | 0 | 41.2 | 55.2 | 55.1 | 63.4 | 67.1 |",
                "| mixer | 0 | 59.0 | 65.4 | 70.3 | 71.0 | 78.3 |",
                # mixer minus transformer: 4.9 points at the default's budget, 8.6 and 11.5 at 2x and 3x
                "| 0 | 81,920 | +4.9 | +12.6 | -0.133 |", "| 0 | 163,840 | +8.6 | +16.3 | -0.127 |",
                "| 0 | 245,760 | +11.5 | +20.6 | -0.174 |",
                "The 81,920-sample branch's recipe_sha256: sha-640-128.",
                "Trained at: commit abc1234, cpu (AVX512), 1 torch threads."):
        assert row in text, row
    data = json.loads((out / "report" / "plateau.json").read_text())
    transformer = data["chains"][0]
    assert transformer["family"] == "transformer" and transformer["trunk"]["toy_top1_seen"]["768"] == 55.2
    assert transformer["gains"][0]["toy_top1_seen"] == pytest.approx(70.8 - 60.2)
    assert [e["step"] for e in transformer["curves"]["transformer-w96-lr0.001-seed0-n81920"]] == [576, 640]
    assert data["shared_recipe"] == {"warmup_steps": 40, "precision": "bf16", "lr_schedule": "constant",
                                     "global_batch_size": 128}
    capsys.readouterr()

    # regenerated by the driver's `report` command: the same file, nothing trained
    before = (out / "report" / "plateau.md").read_bytes()
    (out / "report" / "plateau.md").unlink()
    from results.drivers.scaling_sweep import main as driver_main
    assert driver_main(["report", "--target", "plateau", "--out", str(out)]) == 0
    assert (out / "report" / "plateau.md").read_bytes() == before

    # refusals, one line each: an unfinished run, and a recipe field the sweep does not vary
    (out / "runs" / "mixer-w96-lr0.001-seed0-n163840" / "final_eval.json").rename(tmp_path / "kept.json")
    assert report_main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 of the 8 planned runs have not finished" in err
    assert "mixer-w96-lr0.001-seed0-n163840" in err
    (tmp_path / "kept.json").rename(out / "runs" / "mixer-w96-lr0.001-seed0-n163840" / "final_eval.json")
    config = out / "runs" / "mixer-w96-lr0.001-seed0-trunk" / "config.json"
    edited = json.loads(config.read_text())
    edited["recipe_identity"]["warmup_steps"] = 80
    config.write_text(json.dumps(edited))
    assert report_main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warmup_steps (40 in" in err and "80 in" in err


def test_another_targets_lr_choice_is_refused(tmp_path):
    out = tmp_path / "plateau"
    (out / "runs").mkdir(parents=True)
    (out / "lr_choice.json").write_text(json.dumps({"best_lr": {"transformer": 5e-4, "mixer": 2e-3}}))
    done = sweep("chain", "--target", "plateau", "--phase", "grid", "--index", "0", "--out", str(out),
                 "--launcher", "false", "--allow-dirty")
    errors = [line for line in done.stderr.splitlines() if not line.startswith("note:")]  # a dirty tree's
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "is not one of target plateau's lr_tuning.values [0.001]" in errors[0]


def tiny_spec(tmp_path: Path) -> Path:
    """The plateau target at w64, batch 8, the Mixer only: budgets of 5 / 10 steps (cooldowns 1 / 2), so
    one trunk and two branches: three training processes (the plan's two families and three budgets are
    checked without training, above)."""
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["families"] = ["mixer"]
    spec["targets"]["plateau"].update(
        sizes=["w64"], budgets=[40, 80], global_batch=8,
        recipe={"batch_size": 8, "warmup_steps": 1, "precision": "fp32"},
        run_options={"eval_every": 2, "eval_samples": 64, "log_every": 1, "save_every": 4,
                     "keep_checkpoints": 1, "workers": 0, "cpu_threads": 1},
        lr_tuning={"size": "w64", "values": [1e-3], "seeds": [0]})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow  # 3 real training processes: 39 s on the 2-core EPYC under load (8: 91-216 s)
def test_the_driver_trains_the_tiny_plateau_and_reports_the_runs_numbers(tmp_path):
    spec, out = tiny_spec(tmp_path), tmp_path / "plateau"
    args = ["run", "--spec", str(spec), "--target", "plateau", "--out", str(out), "--allow-dirty"]
    done = sweep(*args, "--jobs", "2", timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        f"mixer-w64-lr0.001-seed0-{end}" for end in ("trunk", "n40", "n80"))
    assert not any(runs.glob("*/checkpoints/*.pt")), "checkpoints are deleted once a chain is done"
    data = json.loads((out / "report" / "plateau.json").read_text())
    assert data["trunk_steps"] == [4, 6, 8]
    for chain in data["chains"]:
        for budget in chain["budgets"]:  # the table's numbers are the runs' own final evaluations
            final = json.loads((runs / budget["run"] / "final_eval.json").read_text())
            assert final["step"] == budget["steps"]
            for key in ("toy_top1_seen", "toy_top1_held_out", "toy_val_loss"):
                assert budget[key] == final.get(f"eval/{key}")
            branched = json.loads((runs / budget["run"] / "config.json").read_text())["branched_from"]
            assert branched.endswith(f"step_{budget['branch_step']:08d}.pt")
        trunk_evals = {line["step"]: line for line in map(json.loads, (runs / chain["trunk"]["run"]
                                                                       / "metrics.jsonl").open())
                       if "eval/toy_top1_seen" in line}
        assert chain["trunk"]["toy_top1_seen"] == {str(s): trunk_evals[s]["eval/toy_top1_seen"]
                                                   for s in (4, 6, 8)}
    text = (out / "report" / "plateau.md").read_text()
    assert "| mixer | 0 | 40 (1x) | 5 (1) |" in text and "| mixer | 0 | 1x -> 2x |" in text
    again = sweep(*args)  # finished: nothing starts, the report is written again
    assert again.returncode == 0 and "+ " not in again.stdout, again.stdout


@pytest.mark.slow  # two 4-step runs in this process: 54 s on the 2-core EPYC under the tuning grid
def test_evaluating_during_training_leaves_the_weights_bit_identical(tmp_path):
    """The plateau's runs evaluate every 64 steps and the default run never does (--eval-every 0): with
    the recipe_sha256 equal, this is what makes the 1x branch the default run itself."""
    import torch

    from launch.train import main

    common = ["--tower", "mixer", "--variant", "w64", "--batch-size", "8", "--warmup-steps", "1",
              "--eval-samples", "16", "--workers", "0", "--log-every", "1", "--cpu-threads", "1",
              "--runs-dir", str(tmp_path), "--steps", "4", "--cooldown-steps", "1", "--save-every", "4"]
    assert main([*common, "--eval-every", "1", "--name", "evals"]) == 0
    assert main([*common, "--eval-every", "0", "--name", "no-evals"]) == 0
    evals, no_evals = (torch.load(RunFolder(tmp_path / name).checkpoint(4), weights_only=True)["state_dict"]
                       for name in ("evals", "no-evals"))
    assert [[row["step"] for row in RunFolder(tmp_path / name).read_metric_rows().evals]
            for name in ("evals", "no-evals")] == [[1, 2, 3, 4], [4]]
    assert evals.keys() == no_evals.keys()
    for key, value in evals.items():
        assert torch.equal(value, no_evals[key]), key
