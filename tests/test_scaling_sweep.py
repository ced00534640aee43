"""The scaling-law sweep: the committed spec's grid, the constant-lr schedule its branches rely on, the
local executor (with tests/scaling_fake_trainer.py standing in for training: tune, choose each family's
lr, grid, check, report, resume), the SLURM array jobs (sbatch/srun stand-ins), and one real
cooldown branch that equals the fresh run of its budget."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from launch.config import Recipe
from launch.trainer import learning_rate
from results.scaling_spec import DEFAULT_SPEC, families, load_spec, plan, target

REPO = Path(__file__).resolve().parents[1]
FAKE = [sys.executable, str(REPO / "tests" / "scaling_fake_trainer.py")]


def test_committed_toy_grid_meets_the_issue():
    import towers

    spec = load_spec(DEFAULT_SPEC)
    t = target(spec, "toy")
    assert families(spec) == ["transformer", "mixer"] and len(t.sizes) >= 4 and len(t.budgets) >= 3
    assert len(t.tune_lrs) >= 3 and t.tune_size == t.sizes[0]
    assert not set(t.tune_seeds) & set(t.seeds), "the lr is chosen on seeds no grid point uses"
    from launch.config import parse_experiment
    from results.scaling_spec import train_flags

    best = {family: t.tune_lrs[0] for family in families(spec)}
    trunks = [runs[0] for runs in plan(spec, t, "grid", Path("runs"), best)]
    for family in families(spec):
        gflops = []  # per sample, of the models the sweep's runs build (the toy context), as they record it
        for size in t.sizes:
            run = next(r for r in trunks if r.family == family and r.size == size)
            experiment, _ = parse_experiment(train_flags(run.flags))
            with torch.device("meta"):
                cost = towers.profile(towers.build_model(**experiment.model_kwargs()))
            gflops.append(cost["image_gflops"] + cost["text_gflops"])
        assert gflops == sorted(gflops) and gflops[-1] / gflops[0] >= 8, (family, gflops)
    slurm = target(spec, "slurm")
    assert slurm.sizes == ["S/32", "B/32", "B/16"]
    assert slurm.budgets == [12_800_000, 128_000_000, 1_280_000_000]


def test_branches_share_the_trunk_recipe_and_its_lr_until_their_branch_point(tmp_path):
    spec = load_spec(DEFAULT_SPEC)
    t = target(spec, "toy")
    trunk, *branches = plan(spec, t, "tune", tmp_path)[0]
    assert trunk.flags["keep_steps"] == sorted(b.branch_step for b in branches)
    assert trunk.flags["cooldown_steps"] == 0  # the trunk never cools down: every branch point is on it
    trunk_recipe = Recipe(lr=trunk.flags["lr"], steps=trunk.flags["steps"], lr_schedule="constant",
                          warmup_steps=trunk.flags["warmup_steps"], cooldown_steps=0)
    for branch in branches:
        same = {k for k in set(branch.flags) | set(trunk.flags) if branch.flags.get(k) == trunk.flags.get(k)}
        differing = (set(branch.flags) | set(trunk.flags)) - same
        assert differing == {"steps", "cooldown_steps", "branch_from", "keep_steps"}
        recipe = dataclasses.replace(trunk_recipe, steps=branch.flags["steps"],
                                     cooldown_steps=branch.flags["cooldown_steps"])
        assert branch.branch_step == recipe.steps - recipe.cooldown_steps
        assert branch.flags["cooldown_steps"] == round(0.2 * branch.flags["steps"])
        assert all(learning_rate(s, recipe) == learning_rate(s, trunk_recipe)
                   for s in range(branch.branch_step))
        # the cooldown: linear from the constant lr towards 0 at the budget's last step
        tail = [learning_rate(s, recipe) for s in range(branch.branch_step, recipe.steps)]
        assert tail == sorted(tail, reverse=True)
        assert tail[-1] == pytest.approx(recipe.lr / (recipe.cooldown_steps + 1))
    from launch.config import parse_experiment
    from results.scaling_spec import train_flags

    for name in ("toy", "slurm"):  # every planned run's flags are ones launch/train.py takes
        t = target(spec, name)
        best = {family: t.tune_lrs[0] for family in families(spec)}
        for phase in ("tune", "grid", "check"):
            for run in (r for runs in plan(spec, t, phase, tmp_path, best) for r in runs):
                experiment, options = parse_experiment([*train_flags(run.flags), "--resume", "auto"])
                assert experiment.recipe.steps == run.flags["steps"] and experiment.variant == run.size
    cosine = Recipe(steps=100, warmup_steps=10, lr_schedule="cosine")  # half-way down at mid-decay
    assert learning_rate(55, cosine) == pytest.approx(0.5 * cosine.lr)


def small_spec(tmp_path: Path) -> Path:
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    toy = spec["targets"]["toy"]
    toy.update(sizes=["w64", "w96", "w128"], budgets=[1280, 2560], seeds=[0, 1],
               lr_tuning={"size": "w64", "values": [5e-4, 1e-3, 2e-3], "seeds": [0]},
               branch_check={"size": "w96", "budget": 2560})
    spec["fit"] = {"holdout": 1, "bootstrap": 50}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(*args: str, log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FAKE_TRAINER_LOG": str(log), "PYTHONPATH": str(REPO)}
    # --allow-dirty: the suite runs in work trees with uncommitted changes; these runs are stand-ins
    return subprocess.run([sys.executable, "-m", "results.drivers.scaling_sweep", *args, "--allow-dirty"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # 52 stand-in runs, each a process: about 30 s on a quiet 2-core CPU
def test_local_sweep_tunes_each_family_runs_the_grid_reports_and_resumes(tmp_path):
    spec, out, log = small_spec(tmp_path), tmp_path / "sweep", tmp_path / "calls.log"
    done = sweep("run", "--spec", str(spec), "--out", str(out), "--launcher", " ".join(FAKE), log=log)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    choice = json.loads((out / "lr_choice.json").read_text())
    assert choice["best_lr"] == {"transformer": 1e-3, "mixer": 2e-3}  # the fake's optima, each its own
    calls = log.read_text().split()
    # tune 2 families x 3 lrs x (trunk + 2 branches); grid adds w64 seed 1 and w96, w128 x 2 seeds; check 4
    assert len(calls) == len(set(calls)) == 18 + 2 * 5 * 3 + 4
    # the check right after tuning, then the grid smallest size first, the families taking turns: a
    # sweep cut short leaves both families measured at the same points
    check, grid = calls[18:22], calls[22:]
    assert all(name.endswith("-fresh") for name in check)
    trunks = [name.split("-")[:2] for name in grid if name.endswith("-trunk")]
    assert [family for family, _ in trunks] == ["transformer", "mixer"] * 5
    assert [size for _, size in trunks] == sorted((size for _, size in trunks), key=lambda s: int(s[1:]))
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {f"train {name}" for name in calls}
    assert not any((out / "runs").glob("*/checkpoints")), "checkpoints are deleted once a chain is done"
    report = (out / "report" / "report.md").read_text()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["verdict"] in done.stdout and "mixer is better" in summary["verdict"]
    assert "## Learning-rate tuning" in report and report.count("| transformer | 0.0005 |") == 1
    assert (out / "report" / "scaling.png").stat().st_size > 10_000

    log.unlink()
    again = sweep("run", "--spec", str(spec), "--out", str(out), "--launcher", " ".join(FAKE), log=log)
    assert again.returncode == 0 and not log.exists(), "a finished sweep starts nothing"
    branch = "mixer-w96-lr0.002-seed1-n2560"
    (out / "runs" / branch / "final_eval.json").unlink()
    again = sweep("run", "--spec", str(spec), "--out", str(out), "--launcher", " ".join(FAKE), log=log)
    assert again.returncode == 0, again.stderr[-2000:]
    # its trunk's checkpoints were deleted with the finished chain: the trunk trains again first
    assert log.read_text().split() == ["mixer-w96-lr0.002-seed1-trunk", branch]

    # a sweep still running: --partial tables what has finished and draws no verdict; without it, refused
    unfinished = out / "runs" / "transformer-w128-lr0.001-seed1-n2560" / "final_eval.json"
    unfinished.rename(unfinished.with_name("kept.json"))
    report = [sys.executable, "-m", "results.scaling_report", "--spec", str(spec), "--out", str(out)]
    refused = subprocess.run(report, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "1 planned runs have not finished" in refused.stderr
    partial = subprocess.run([*report, "--partial"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert partial.returncode == 0, partial.stderr
    text = (out / "report" / "report.md").read_text()
    planned = 2 * 3 * 2 + 2 * 2 + 2 * 2 * 2 * 2 + 4  # tune branches, grid w64 seed 1, w96 + w128, check
    assert f"Partial: {planned - 1} of {planned} planned runs have finished" in text
    assert "## Fitted laws" not in text and "| transformer | w128 | 2,560 |" in text
    assert json.loads((out / "report" / "summary.json").read_text())["verdict"] is None
    unfinished.with_name("kept.json").rename(unfinished)

    config = out / "runs" / "transformer-w128-lr0.001-seed0-n1280" / "config.json"
    edited = json.loads(config.read_text())
    edited["recipe_identity"]["warmup_steps"] = 7
    config.write_text(json.dumps(edited))
    refused = subprocess.run([sys.executable, "-m", "results.scaling_report", "--spec", str(spec),
                              "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "warmup_steps" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


@pytest.mark.slow  # the same 52 stand-in runs
def test_two_jobs_run_the_same_sweep_each_run_with_its_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("MIXCLIP_CPU_THREADS", raising=False)  # pytest-xdist workers set their own share
    spec, log = small_spec(tmp_path), tmp_path / "calls.log"
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    for out, jobs in ((serial, "1"), (parallel, "2")):
        done = sweep("run", "--spec", str(spec), "--out", str(out), "--launcher", " ".join(FAKE),
                     "--jobs", jobs, log=log)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (json.loads((parallel / "lr_choice.json").read_text())
            == json.loads((serial / "lr_choice.json").read_text()))
    names = {out: sorted(p.name for p in (out / "runs").iterdir()) for out in (serial, parallel)}
    assert names[parallel] == names[serial]
    assert (json.loads((parallel / "report" / "summary.json").read_text())["verdict"]
            == json.loads((serial / "report" / "summary.json").read_text())["verdict"])
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    configs = [json.loads(p.read_text()) for p in (parallel / "runs").glob("*/config.json")]
    assert {c["cpu_threads_env"] for c in configs} == {share}
    serial_configs = [json.loads(p.read_text()) for p in (serial / "runs").glob("*/config.json")]
    assert {c["cpu_threads_env"] for c in serial_configs} == {None}
    assert len(json.loads((parallel / "timings.json").read_text())) == len(configs)


def test_a_failed_run_stops_a_parallel_sweep_with_its_name(tmp_path, monkeypatch):
    spec, out, log = small_spec(tmp_path), tmp_path / "sweep", tmp_path / "calls.log"
    failing = "transformer-w64-lr0.0005-seed0-trunk"  # the first tuning chain's first run
    monkeypatch.setenv("FAKE_TRAINER_FAIL", failing)
    done = sweep("run", "--spec", str(spec), "--out", str(out), "--launcher", " ".join(FAKE), "--jobs", "2",
                 log=log)
    assert done.returncode == 1 and f"error: run {failing} failed with exit status 3" in done.stderr
    calls = log.read_text().split()
    # the other job ends its chain's current run and starts no further one: far from tuning's 18 runs
    assert failing in calls and len(calls) <= 8, calls
    assert not (out / "lr_choice.json").exists()


def test_bad_spec_is_one_line_exit_2(tmp_path):
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    spec["targets"]["toy"]["budgets"] = [1000]  # not a whole number of 128-sample steps
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = sweep("run", "--spec", str(path), "--dry-run", log=tmp_path / "log")
    assert done.returncode == 2 and done.stderr.startswith(f"error: {path}: budget 1000")
    assert done.stderr.count("\n") == 1


def test_estimate_times_every_size_and_sums_the_plan(tmp_path):
    spec, out = small_spec(tmp_path), tmp_path / "estimate"
    done = sweep("estimate", "--spec", str(spec), "--out", str(out), "--launcher", " ".join(FAKE),
                 "--estimate-steps", "4", log=tmp_path / "log")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "estimate.json").read_text())
    assert len(record["per_size"]) == 6 and record["cpu_capability"]
    # the stand-in trains 1000 / gflops samples per second: seconds per step = 128 * gflops / 1000
    assert record["per_size"]["mixer w96"]["seconds_per_step"] == pytest.approx(128 * 0.43 / 1000)
    assert record["total_hours"] == pytest.approx(sum(record["plan_hours"].values()))
    assert record["total_hours"] > 0


STAND_INS = {
    "srun": '#!/bin/bash\n# srun stand-in: prints its command, and its flags on a line of their own\n'
            'flags=""; while [[ $1 == --* ]]; do flags="$flags $1"; shift; done\n'
            'echo "SRUN-FLAGS$flags"; echo "SRUN $*"\n',
    "scontrol": '#!/bin/bash\ntr "," "\\n" <<< "$3"\n',
    "sbatch": '#!/bin/bash\n# sbatch stand-in: records its arguments, answers a job id\n'
              'echo "$*" >> "$SBATCH_LOG"\necho 4242\n',
}


def test_slurm_array_jobs_run_the_same_plan_at_s32_b32_b16(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "slurm"
    done = sweep("slurm", "--out", str(out), log=tmp_path / "log")
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node1,node2",
           "SBATCH_LOG": str(tmp_path / "sbatch.log")}
    # its arguments go on to every chain: --allow-dirty, as in a work tree under development
    submitted = subprocess.run(["bash", str(out / "submit.sh"), "--allow-dirty"], env=env,
                               capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    assert calls[0].endswith("tune.sbatch --allow-dirty") and all(c.endswith(" --allow-dirty") for c in calls)
    assert all("--dependency=afterok:4242" in c for c in calls[1:])
    assert "#SBATCH --array=0-5" in (out / "tune.sbatch").read_text()  # 2 families x 3 lrs x 1 seed

    (out / "lr_choice.json").write_text(json.dumps({"best_lr": {"transformer": 5e-4, "mixer": 1e-3}}))
    task = subprocess.run(["bash", str(out / "grid.sbatch"), "--allow-dirty"],
                          env={**env, "SLURM_ARRAY_TASK_ID": "5"},
                          capture_output=True, text=True, timeout=120)
    assert task.returncode == 0, task.stderr
    commands = [line for line in (out / "commands.log").read_text().splitlines()
                if line.startswith("SRUN ")]
    assert len(commands) == 4, task.stdout  # mixer B/16 seed 0: its trunk and 3 branches
    trunk, first = commands[0], commands[1]
    flags = [line for line in (out / "commands.log").read_text().splitlines()
             if line.startswith("SRUN-FLAGS")]  # the spec's cpus_per_task: 96
    assert len(flags) == 4 and all("--kill-on-bad-exit=1" in f and "--cpus-per-task=96" in f for f in flags)
    assert "--num_processes 16" in trunk and "--main_process_ip $MASTER_ADDR" in trunk
    assert "--variant B/16" in trunk and "--lr 0.001" in trunk and "--steps 250000" in trunk
    assert "--keep-steps 2500 25000 250000" in trunk and "--resume auto" in trunk
    assert "--steps 3125 --cooldown-steps 625 --branch-from" in first and "step_00002500.pt" in first
    assert "--batch-size 256" in first and "--imagenet-val /data/imagenet/val" in first


@pytest.mark.slow
def test_a_cooldown_branch_is_the_fresh_run_of_its_budget(tmp_path):
    import torch

    from launch.train import main

    common = ["--tower", "mixer", "--variant", "w64", "--batch-size", "8", "--warmup-steps", "1",
              "--lr-schedule", "constant", "--eval-samples", "16", "--workers", "0", "--log-every", "1",
              "--cpu-threads", "1", "--runs-dir", str(tmp_path)]
    assert main([*common, "--steps", "4", "--cooldown-steps", "0", "--keep-steps", "2",
                 "--keep-checkpoints", "1", "--name", "trunk"]) == 0
    point = tmp_path / "trunk" / "checkpoints" / "step_00000002.pt"
    assert main([*common, "--steps", "3", "--cooldown-steps", "1", "--branch-from", str(point),
                 "--name", "branch"]) == 0
    assert main([*common, "--steps", "3", "--cooldown-steps", "1", "--name", "fresh"]) == 0
    branch, fresh = (torch.load(tmp_path / name / "checkpoints" / "step_00000003.pt", weights_only=True)
                     for name in ("branch", "fresh"))
    assert branch["state_dict"].keys() == fresh["state_dict"].keys()
    for key, value in branch["state_dict"].items():
        assert torch.equal(value, fresh["state_dict"][key]), key
    assert json.loads((tmp_path / "branch" / "config.json").read_text())["branched_from"] == str(point)
    # a cooldown that would start before the checkpoint does not branch from it
    assert main([*common, "--steps", "3", "--cooldown-steps", "2", "--branch-from", str(point),
                 "--name", "bad"]) == 2


def test_schedule_and_branch_flags_parse_and_bad_ones_are_one_line(tmp_path, capsys):
    from launch.checkpointing import prune_checkpoints, save_checkpoint
    from launch.config import parse_experiment

    experiment, run = parse_experiment(["--lr-schedule", "constant", "--cooldown-steps", "5", "--keep-steps",
                                        "3", "6", "--betas", "0.9", "0.95"])
    assert (experiment.recipe.lr_schedule, experiment.recipe.cooldown_steps) == ("constant", 5)
    assert run.keep_steps == (3, 6) and experiment.recipe.betas == (0.9, 0.95)  # floats, not str
    # the default: constant lr with a cooldown over the last 20% of the steps, at most what warmup leaves
    assert (Recipe().lr_schedule, Recipe().steps, Recipe().cooldown_steps) == ("constant", 640, 128)
    assert Recipe(steps=10, warmup_steps=1).cooldown_steps == 2
    assert Recipe(steps=5, warmup_steps=4).cooldown_steps == 1
    assert Recipe(lr_schedule="cosine").cooldown_steps == 0
    for bad, message in ((["--lr-schedule", "cosine", "--cooldown-steps", "5"],
                          "--cooldown-steps 5 needs --lr-schedule constant"),
                         (["--lr-schedule", "constant", "--cooldown-steps", "749"],
                          "--cooldown-steps 749 is longer than --steps 640")):
        with pytest.raises(SystemExit) as exit_info:
            parse_experiment(bad)
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    for step in range(1, 7):  # pinned branch points survive pruning and do not count against `keep`
        path = save_checkpoint(tmp_path, step, {"step": step})
        prune_checkpoints(tmp_path, 1, path, pinned=(2, 4))
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == [
        "step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]


def test_readme_states_the_committed_sweeps_verdict_or_its_progress():
    summary = json.loads((REPO / "results" / "scaling" / "report" / "summary.json").read_text())
    readme = " ".join((REPO / "docs" / "results" / "scaling.md").read_text().split())  # the README links it
    if summary["verdict"] is None:  # a sweep part-way: the README says how far, in the report's numbers
        progress = summary["progress"]
        assert f"{progress['finished']} of {progress['planned']} runs" in readme
    else:
        assert summary["verdict"] in readme
