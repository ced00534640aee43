"""The committed recipes (launch/configs/*.yaml): each parses, the toy one is the bare defaults, and one
file launched on 8 GPUs (the README's command) and by the SLURM job on 2 x 8 gives one recipe_sha256.
Their hashes, and those of the committed runs, stay what they were; warmup and cooldown follow --steps."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from test_slurm import SBATCH, stand_ins

from launch.config import CONFIGS_DIR, HASHED_WHEN_SET, TOY_FIELDS, Recipe, parse_experiment
from launch.data import data_identity

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(CONFIGS_DIR.glob("*.yaml"))


def recipe_sha256(argv: list[str], processes: int, monkeypatch) -> tuple[str, int]:
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    experiment, _ = parse_experiment(argv)
    recipe = experiment.recipe
    # LAION's shards are not on this machine: the data enters the hash by its spec (the same string
    # in both launches gives the same shard names, launch.data.data_identity)
    data = data_identity(None) if recipe.train_data is None else {"spec": recipe.train_data}
    return recipe.with_precision("cpu")[0].sha256(processes, data), recipe.batch_size


def train_py_args(command: str) -> list[str]:
    return shlex.split(command.split("launch/train.py", 1)[1])


def test_the_four_committed_recipes_exist():
    assert [c.name for c in CONFIGS] == ["datacomp-medium.yaml", "datacomp-small.yaml",
                                         "laion400m-b32.yaml", "toy.yaml"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_every_recipe_parses_and_splits_its_global_batch(config, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    experiment, _ = parse_experiment(["--config", str(config), "--tower", "transformer"])
    if config.stem != "toy":
        # DataComp and LAION: 4096 = 8 x 512, B/32 at CLIP's context
        assert experiment.recipe.batch_size == 512 and experiment.variant == "B/32"
        assert experiment.recipe.context_length == 77 and experiment.recipe.lr == 5e-4


def test_datacomp_scales_are_their_published_samples_seen(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    for name, samples in (("small", 12_800_000), ("medium", 128_000_000)):
        recipe = parse_experiment(["--config", str(CONFIGS_DIR / f"datacomp-{name}.yaml")])[0].recipe
        assert recipe.steps * recipe.batch_size * 16 == samples and recipe.warmup_steps == 500
        assert recipe.grad_clip == 0 and recipe.local_loss


def test_toy_recipe_is_the_bare_default(monkeypatch):
    assert recipe_sha256(["--config", str(CONFIGS_DIR / "toy.yaml")], 1, monkeypatch) == \
        recipe_sha256([], 1, monkeypatch)


def test_8_gpu_and_slurm_launches_of_one_config_share_recipe_sha256(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    eight_gpu = next(line for line in readme.splitlines()
                     if "8gpu.yaml launch/train.py" in line and "--tower mixer" in line)
    env = {"PATH": f"{stand_ins(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "SRUN_DRY": "1", "TOWER": "transformer",
           "NO_EVAL": "1"}
    done = subprocess.run(["bash", str(SBATCH)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    slurm = " ".join(done.stdout.split())
    eight, eight_batch = recipe_sha256(train_py_args(eight_gpu), 8, monkeypatch)
    sixteen, sixteen_batch = recipe_sha256(train_py_args(slurm), 16, monkeypatch)
    assert (eight_batch, sixteen_batch) == (512, 256)  # split differently ...
    assert eight == sixteen  # ... one recipe (and the tower differs: it is not in the recipe)
    single, _ = recipe_sha256(train_py_args(eight_gpu) + ["--batch-size", "512"], 1, monkeypatch)
    assert single != eight  # a global batch of 512 is another recipe


def test_global_batch_that_does_not_split_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(["--config", str(CONFIGS_DIR / "laion400m-b32.yaml")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--global-batch-size 4096" in err and "3 process(es)" in err


# sha256 of each committed recipe (8 processes; toy: 1), `auto` as fp32, computed before warmup followed
# --steps: a change to how a recipe resolves or hashes must not move them
PINNED_SHA256 = {
    "datacomp-medium": "46831d79250b0b4215d7b4c4cc4377558dddca1d0091c7139064cd6dd83769d3",
    "datacomp-small": "6e3e93acb1fc8c596ff67169b9e9ceed4773f68e93f2cde4e96d6546e60ef52c",
    "laion400m-b32": "e2bb71828f5922a4ed481e0b6dbb5377b3f36e1a0766475409218189046a66c6",
    "toy": "d32b4ebb02336ada84aaf13b6a378a4cc0c8700703c95ae3dd13e12c70cb652c",
}
# committed runs whose recorded command replays to their recorded recipe_sha256 (the others were made
# by older flags or defaults; their config.json still rehashes, test below)
REPLAYING_RUNS = 108


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_committed_recipe_hashes_are_unchanged(config, monkeypatch):
    processes = 1 if config.stem == "toy" else 8
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    recipe = parse_experiment(["--config", str(config)])[0].recipe
    recipe = dataclasses.replace(recipe, precision="fp32" if recipe.precision == "auto" else recipe.precision)
    data = data_identity(None) if recipe.train_data is None else {"spec": recipe.train_data}
    assert recipe.sha256(processes, data) == PINNED_SHA256[config.stem]


def _committed_runs() -> list[tuple[Path, dict]]:
    return [(path, json.loads(path.read_text())) for path in sorted((REPO / "results").rglob("config.json"))]


def test_committed_runs_keep_their_recipe_sha256(monkeypatch):
    """Each committed run's recorded recipe rehashes to its recipe_sha256, and its recorded command,
    parsed by today's flags, gives the same hash wherever those flags still mean what they meant."""
    runs = _committed_runs()
    rehashed = replayed = 0
    for path, config in runs:
        recorded = config["experiment"]["recipe"]
        processes, data = config["world_size"], config["recipe_identity"]["train_data"]
        # older runs lack later fields; those hashed only when set (and the toy's) read as their defaults
        missing = set(Recipe.__dataclass_fields__) - set(recorded)
        late = set(HASHED_WHEN_SET) | set(TOY_FIELDS)
        if set(recorded) <= set(Recipe.__dataclass_fields__) and missing <= late:
            recipe = Recipe(**{**recorded, "betas": tuple(recorded["betas"])})
            assert recipe.sha256(processes, data) == config["recipe_sha256"], path
            rehashed += 1
        monkeypatch.setenv("WORLD_SIZE", str(processes))
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                recipe = parse_experiment(train_py_args(config["command"]))[0].recipe
        except SystemExit:  # a flag combination refused since
            continue
        resolved = config.get("precision", {}).get("resolved", recorded["precision"])
        replayed += dataclasses.replace(recipe, precision=resolved).sha256(processes, data) == \
            config["recipe_sha256"]
    assert len(runs) >= 170 and rehashed >= 154
    assert replayed >= REPLAYING_RUNS, f"only {replayed} committed runs replay to their recipe_sha256"


@pytest.mark.parametrize(("steps", "warmup", "cooldown"), [(1, 0, 0), (2, 0, 0), (20, 1, 4), (100, 6, 20),
                                                            (640, 40, 128), (1000, 62, 200)])
def test_warmup_and_cooldown_follow_the_steps(steps, warmup, cooldown):
    recipe = parse_experiment(["--steps", str(steps)])[0].recipe
    assert (recipe.warmup_steps, recipe.cooldown_steps) == (warmup, cooldown)
    assert Recipe(steps=steps) == recipe
    # a value given stays; the other one makes room for it
    assert Recipe(steps=20, cooldown_steps=20).warmup_steps == 0
    assert Recipe(steps=20, warmup_steps=18).cooldown_steps == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--steps", "20", "--warmup-steps", "40"],
     "--warmup-steps 40 is longer than --steps 20: pass a smaller --warmup-steps, or leave it out"),
    (["--steps", "20", "--cooldown-steps", "30"], "--cooldown-steps 30 is longer than --steps 20"),
    (["--steps", "20", "--warmup-steps", "15", "--cooldown-steps", "10"],
     "--warmup-steps 15 plus --cooldown-steps 10 is longer than --steps 20"),
    (["--config", str(CONFIGS_DIR / "laion400m-b32.yaml"), "--steps", "20"],
     f"--warmup-steps 2000 (from --config {CONFIGS_DIR / 'laion400m-b32.yaml'}) is longer than --steps 20"),
    (["--lr-schedule", "cosine", "--cooldown-steps", "3"], "--cooldown-steps 3 needs --lr-schedule constant"),
    (["--steps", "0"], "--steps must be > 0"),
])
def test_a_schedule_that_does_not_fit_names_the_flag_given(argv, message, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
