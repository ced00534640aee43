"""The committed recipes (launch/configs/*.yaml): each parses, the toy one is the bare defaults, and one
file launched on 8 GPUs (the README's command) and by the SLURM job on 2 x 8 gives one recipe_sha256."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from test_slurm import SBATCH, stand_ins

from launch.config import CONFIGS_DIR, parse_experiment
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
