"""The training script end to end: run record, exact resume after kill -9, refusals, NaN handling."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from open_clip.loss import ClipLoss
from session_runs import KILL_AND_RESUME, uninterrupted_run
from test_multinode import free_port

import towers
from launch import train
from launch.config import parse_experiment
from launch.data import data_identity
from launch.process_device import CPU_THREADS_ENV
from launch.trainer import build_optimizer

REPO = Path(__file__).resolve().parents[1]
TOY = data_identity(None)
FAST = ["--batch-size", "16", "--eval-samples", "64", "--workers", "1", "--log-every", "2"]


def _args(runs: Path, name: str, *extra: str) -> list[str]:
    return ["--tower", "mixer", "--steps", "10", "--warmup-steps", "2", *FAST, "--runs-dir", str(runs),
            "--name", name, *extra]


def _weights(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["state_dict"]


def test_recipe_is_blind_to_the_tower():
    common = ["--steps", "100", "--lr", "3e-4", "--batch-size", "64"]
    mixer, _ = parse_experiment(["--tower", "mixer", *common])
    transformer, _ = parse_experiment(["--tower", "transformer", *common])
    assert mixer.recipe == transformer.recipe
    def sha(experiment):
        return experiment.recipe.with_precision("cpu")[0].sha256(1, TOY)

    assert sha(mixer) == sha(transformer)
    longer, _ = parse_experiment(["--tower", "mixer", "--steps", "101"])
    assert sha(mixer) != sha(longer)

    groups = [build_optimizer(towers.build_model(**e.model_kwargs()), e.recipe).param_groups
              for e in (mixer, transformer)]
    hyper = [[{k: v for k, v in g.items() if k != "params"} for g in gs] for gs in groups]
    assert hyper[0] == hyper[1]
    assert hyper[0][0]["betas"] == (0.9, 0.98) and hyper[0][0]["eps"] == 1e-6
    assert [g["weight_decay"] for g in groups[0]] == [0.2, 0.0]
    for gs in groups:  # decay exactly on >= 2-d tensors; logit_scale, biases, gains never
        assert all(p.ndim >= 2 for p in gs[0]["params"]) and all(p.ndim < 2 for p in gs[1]["params"])


def test_config_file_with_flag_overrides(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("tower: transformer\nlr: 0.0005\nbatch-size: 32\nbetas: [0.9, 0.95]\n")
    experiment, _ = parse_experiment(["--config", str(config), "--batch-size", "48"])
    assert experiment.image_tower == experiment.text_tower == "transformer"
    recipe = experiment.recipe
    assert (recipe.lr, recipe.batch_size, recipe.betas) == (5e-4, 48, (0.9, 0.95))


@pytest.mark.parametrize("argv, message", [
    (["--tower", "lstm"], "argument --tower: invalid choice: 'lstm'"),
    (["--steps", "0"], "--steps must be > 0"),
    (["--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
    (["--variant", "H/14"], "unknown variant 'H/14'"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


def test_missing_data_path_exits_2_naming_the_pattern(tmp_path, capsys):
    code = train.main(_args(tmp_path, "nodata", "--train-data", str(tmp_path / "gone/{00000..00003}.tar")))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "gone/{00000..00003}.tar" in err[0], err


def test_run_writes_its_record_and_refuses_another_tower_on_resume(tmp_path, capsys):
    assert train.main(_args(tmp_path, "run", "--steps", "4", "--save-every", "2")) == 0
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "config.json").read_text())
    expected, _ = parse_experiment(_args(tmp_path, "x", "--steps", "4"))
    assert config["recipe_sha256"] == expected.recipe.with_precision("cpu")[0].sha256(1, TOY)
    identity = config["recipe_identity"]
    assert identity["global_batch_size"] == 16 and identity["train_data"] == TOY
    with torch.device("meta"):
        expected_params = towers.profile(towers.build_model(**expected.model_kwargs()))["total_params"]
    assert config["params"]["total_params"] == expected_params and config["world_size"] == 1
    assert torch.__version__.startswith(config["versions"]["torch"]) and config["git_commit"]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [line["step"] for line in steps] == [2, 4]
    fields = {"samples_seen", "lr", "logit_scale", "samples_per_s", "data_wait_frac", "skipped"}
    assert fields <= set(steps[0])
    for line in lines:  # every line, evaluations too, says when it was written
        written = datetime.datetime.fromisoformat(line["time"])
        assert abs((written - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 600
        assert 0 < line["elapsed_s"] < 600
    assert [line["elapsed_s"] for line in lines] == sorted(line["elapsed_s"] for line in lines)
    assert steps[-1]["samples_seen"] == 64
    assert "eval/toy_top1" in lines[-1] and lines[-1]["eval/toy_n"] == 64
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000004.pt"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        ["latest", "step_00000002.pt", "step_00000004.pt"]
    assert list((run_dir / "tensorboard").iterdir())
    out = capsys.readouterr().out
    assert f"run written to {run_dir}/" in out
    assert f"python -m benchmarks.imagenet_zeroshot --model {run_dir} --dataset toy" in out
    assert f"python -m results.report {run_dir} " in out
    assert "has no published counterpart: towers mixer/mixer" in out  # the end-of-run anchor line
    # the same run name again without --resume is refused (never overwrites a run)
    assert train.main(_args(tmp_path, "run", "--steps", "4")) == 2
    assert "already holds a run" in capsys.readouterr().err
    # resuming it with the other tower is refused, naming the difference
    other_tower = _args(tmp_path, "run", "--steps", "4", "--resume", "latest") + ["--tower", "transformer"]
    code = train.main(other_tower)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "image_tower ('mixer' vs 'transformer')" in err[0] and "text_tower" in err[0]
    code = train.main(_args(tmp_path, "run", "--steps", "4", "--resume", "latest", "--lr", "0.1"))
    assert code == 2 and "recipe.lr (0.001 vs 0.1)" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_auto_starts_without_a_checkpoint_and_falls_back_past_an_unreadable_one(tmp_path, capsys):
    run_dir = tmp_path / "requeued"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")  # preempted before its first checkpoint
    auto = _args(tmp_path, "requeued", "--steps", "4", "--save-every", "1", "--keep-checkpoints", "2",
                 "--resume", "auto")
    assert train.main(auto) == 0
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*.pt")) == ["step_00000003.pt", "step_00000004.pt"]
    uninterrupted = _weights(run_dir, 4)
    capsys.readouterr()

    data = (checkpoints / "step_00000004.pt").read_bytes()
    (checkpoints / "step_00000004.pt").write_bytes(data[:1000])  # torn by a full disk, say
    assert train.main(auto) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "step_00000004.pt: not a readable torch checkpoint" in err[0], err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed_from"].endswith("step_00000003.pt")
    resumed = _weights(run_dir, 4)  # step 3 -> 4 again, exactly
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)

    (checkpoints / "latest").write_text("no such file\n")  # a bad pointer: the newest step file
    assert train.main(auto) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "names 'no such file'" in err[0], err
    assert json.loads((run_dir / "config.json").read_text())["resumed_from"].endswith("step_00000004.pt")


def test_resume_with_another_worker_count_is_refused_naming_both(tmp_path, capsys):
    assert train.main(_args(tmp_path, "w", "--steps", "2", "--save-every", "1")) == 0
    capsys.readouterr()
    assert train.main(_args(tmp_path, "w", "--steps", "2", "--resume", "latest", "--workers", "0")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--workers 1, this run has --workers 0" in err[0], err


@pytest.mark.slow
def test_kill_9_after_step_5_then_resume_equals_uninterrupted(tmp_path, private_cache):
    script = [sys.executable, str(REPO / "launch" / "train.py")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [*KILL_AND_RESUME, "--runs-dir", str(tmp_path), "--name", "killed"]
    full = uninterrupted_run(KILL_AND_RESUME, private_cache, env)

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(script + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not (latest.exists() and latest.read_text().strip() == "step_00000005.pt"):
        assert process.poll() is None and time.time() < deadline, "run ended before its step-5 checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (killed_dir / "checkpoints" / "step_00000010.pt").exists(), "killed too late to test resume"

    resumed = subprocess.run(script + args + ["--resume", "latest"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(full, 10), _weights(killed_dir, 10)
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"kill -9 at step 5 + resume vs uninterrupted, step 10: max param diff {max_diff:.2e}")
    assert max_diff <= 1e-6, max_diff
    assert max((a[k] - _weights(killed_dir, 5)[k]).abs().max().item() for k in a) > 1e-3  # it trained on


def _nan_at(calls):
    """A ClipLoss.forward that returns NaN on the given calls (0-based), as a diverging run would."""
    calls, original, count = set(calls), ClipLoss.forward, [0]

    def forward(loss_self, *args, **kwargs):
        loss = original(loss_self, *args, **kwargs)
        count[0] += 1
        return loss * float("nan") if count[0] - 1 in calls else loss

    return forward


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(ClipLoss, "forward", _nan_at({2, 3}))
    assert train.main(_args(tmp_path, "nan", "--steps", "6", "--save-every", "3")) == 0
    lines = [json.loads(line) for line in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert max(line.get("nonfinite_steps", 0) for line in lines) == 2
    state = _weights(tmp_path / "nan", 6)
    assert all(torch.isfinite(v).all() for v in state.values())
    # step 3 ended inside the NaN streak: no checkpoint was written for it
    assert not (tmp_path / "nan" / "checkpoints" / "step_00000003.pt").exists()


def test_ten_nonfinite_steps_in_a_row_stop_without_a_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ClipLoss, "forward", _nan_at(range(2, 100)))
    code = train.main(_args(tmp_path, "diverged", "--steps", "20", "--save-every", "1"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "10 steps in a row" in err[-1]
    saved = sorted(p.name for p in (tmp_path / "diverged" / "checkpoints").glob("step_*.pt"))
    assert saved == ["step_00000001.pt", "step_00000002.pt"]


def test_bf16_step_takes_its_loss_in_fp32_and_tracks_the_fp32_step():
    # Under bf16 autocast (what --precision auto picks where bf16 is native) the towers run in bf16,
    # the contrastive loss in fp32.
    import contextlib
    import types

    from launch.config import Recipe
    from launch.trainer import ContrastiveStep

    torch.manual_seed(0)
    model = towers.create_model("transformer+mixer-tiny", text_overrides={"context_length": 16})
    images = torch.randn(16, 3, 64, 64)
    tokens = towers.tokenize([f"a {c} shape number {i}" for i, c in enumerate(["red", "blue"] * 8)], 16)
    losses = {}
    for precision, autocast in (("fp32", contextlib.nullcontext),
                                ("bf16", lambda: torch.autocast("cpu", dtype=torch.bfloat16))):
        accelerator = types.SimpleNamespace(autocast=autocast, device=torch.device("cpu"),
                                            process_index=0, num_processes=1)
        step = ContrastiveStep(accelerator, model, None, Recipe(precision=precision))
        image_features, text_features, scale = step._forward(images, tokens)
        assert image_features.dtype == text_features.dtype == torch.float32
        losses[precision] = step.loss(image_features, text_features, scale).item()
    assert losses["bf16"] != losses["fp32"]  # bf16 really ran
    assert losses["bf16"] == pytest.approx(losses["fp32"], abs=2e-2)


def test_attention_runs_the_math_kernel_on_cpu_only():
    flags = (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled,
             torch.backends.cuda.math_sdp_enabled)
    before = [flag() for flag in flags]
    with towers.attention_kernels("cpu"):
        assert [flag() for flag in flags] == [False, False, True]
    with towers.attention_kernels("cuda:0"):
        assert [flag() for flag in flags] == before
    assert [flag() for flag in flags] == before
    # and the Transformer tower gives the same features through the math path (to float noise)
    torch.manual_seed(0)
    model = towers.create_model("transformer-tiny").train()
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        default = model.encode_image(images)
        with towers.attention_kernels("cpu"):
            math = model.encode_image(images)
    assert torch.allclose(default, math, atol=1e-5)


def test_cpu_threads_default_to_the_node_cores_shared_by_its_processes(monkeypatch):
    import psutil

    monkeypatch.delenv(CPU_THREADS_ENV, raising=False)  # set by conftest under pytest-xdist
    cores = train.cpu_threads(None, 1)
    # usable cores, physical ones only (hyper-threads share a core's FMA units)
    assert cores == min(len(os.sched_getaffinity(0)), psutil.cpu_count(logical=False) or os.cpu_count())
    assert train.cpu_threads(3, 1) == 3  # --cpu-threads wins
    assert train.cpu_threads(None, cores) == 1 and train.cpu_threads(None, 10 * cores) == 1


@pytest.mark.slow
def test_plain_accelerate_launch_on_cpu_uses_every_core(tmp_path, monkeypatch):
    # `accelerate launch` without --cpu sets OMP_NUM_THREADS=1 on a machine without GPUs; the README's
    # first command is exactly that, so the trainer must take the cores back.
    unset = ("OMP_NUM_THREADS", CPU_THREADS_ENV)
    env = {key: value for key, value in os.environ.items() if key not in unset}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "launch/train.py",
                           *_args(tmp_path, "plain", "--steps", "2")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    monkeypatch.delenv(CPU_THREADS_ENV, raising=False)
    assert config["torch_threads"] == train.cpu_threads(None, 1)
    assert "OMP_NUM_THREADS" not in env and config["device"] == "cpu"


def test_mixclip_cpu_threads_sets_the_threads_and_a_bad_value_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CPU_THREADS_ENV, "1")
    assert train.main(_args(tmp_path, "one", "--steps", "2")) == 0
    assert json.loads((tmp_path / "one" / "config.json").read_text())["torch_threads"] == 1
    capsys.readouterr()
    monkeypatch.setenv(CPU_THREADS_ENV, "two")
    assert train.main(_args(tmp_path, "bad", "--steps", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: MIXCLIP_CPU_THREADS='two': expected a whole number of threads >= 1"]


@pytest.mark.slow
def test_the_readme_two_process_cpu_command_runs_two_processes(tmp_path):
    # launch/accelerate/cpu.yaml must start 2 processes that join one gloo group (accelerate starts
    # only one for a MULTI_CPU config without mpirun, and would do so silently).
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(REPO / "launch" / "accelerate" / "cpu.yaml"),
                           "--main_process_port", str(free_port()),
                           "launch/train.py", *_args(tmp_path, "two", "--steps", "2", "--batch-size", "8")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 16
    assert config["torch_threads"] == train.cpu_threads(None, 2)
    steps = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [line["samples_seen"] for line in steps if "loss" in line][-1] == 32
