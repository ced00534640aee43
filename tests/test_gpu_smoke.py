"""benchmarks.performance.gpu_smoke on CPU: the stages that mean something without a GPU run at tiny size,
the others say why they were skipped; one JSON with every stage. The launched runs (training, preemption and
`--resume auto`) are the slow test."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.performance import gpu_smoke

LAUNCHED = ("training_mixer", "training_transformer", "preemption")
STAGES = ("environment", "shards", "decoder_race", *LAUNCHED, "decode_throughput", "host_syncs", "pytest_gpu")


def _smoke(out, *flags: str) -> dict:
    result = gpu_smoke.main(["--out", str(out), "--workers", "0", *flags])
    written = json.loads((out / "gpu_smoke.json").read_text())
    assert written == json.loads(json.dumps(result))  # the JSON is the returned result
    assert set(STAGES) <= set(written) and written["failed"] == []
    return written


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: every stage would run")
def test_on_cpu_the_cpu_stages_run_and_the_others_say_why_not(tmp_path):
    result = _smoke(tmp_path / "smoke", "--skip", ",".join(LAUNCHED))
    env = result["environment"]
    assert env["status"] == "ran" and env["device"] == "cpu" and env["cores"] >= 1
    assert env["dev_shm_gib"] is None or env["dev_shm_gib"] > 0
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    shards = result["shards"]
    assert shards["samples"] == gpu_smoke.CPU_SIZE["samples"]
    assert list((tmp_path / "smoke" / "shards").glob("*.tar"))
    for name in ("decoder_race", "host_syncs", "pytest_gpu"):  # CUDA-only: skipped, with the reason
        assert result[name]["status"] == "skipped" and "CUDA" in result[name]["why"], result[name]
    for name in LAUNCHED:
        assert result[name] == {"status": "skipped", "why": "--skip"}
    decode = result["decode_throughput"]  # DeviceDecoder on the CPU against PIL, the same JPEGs
    assert decode["status"] == "ran" and decode["device"] == "cpu"
    assert decode["batch"] == gpu_smoke.CPU_SIZE["batch"]
    assert decode["device_samples_per_s"] > 0 and decode["pil_samples_per_s_one_core"] > 0
    assert decode["pil_cores_replaced"] == pytest.approx(decode["device_samples_per_s"] /
                                                         decode["pil_samples_per_s_one_core"])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: every stage would run")
def test_on_cpu_the_recipe_runs_through_the_launcher_checkpoints_evaluates_and_resumes(tmp_path):
    result = _smoke(tmp_path / "smoke", "--skip", "decode_throughput")
    size = gpu_smoke.CPU_SIZE
    for tower in ("mixer", "transformer"):
        run = result[f"training_{tower}"]
        assert run["status"] == "ran" and run["exit"] == 0 and run["steps"] == size["steps"]
        saved = range(size["every"], size["steps"] + 1, size["every"])
        assert run["checkpoints"] == [f"step_{step:08d}.pt" for step in saved]
        assert size["every"] in run["eval_steps"] and run["samples_per_s"] > 0
        assert 0 <= run["data_wait_frac"] <= 1 and run["peak_memory_gib"] is None  # logged on CUDA only
        config = json.loads((tmp_path / "smoke" / "runs" / f"smoke-{tower}" / "config.json").read_text())
        assert config["experiment"]["recipe"]["train_data"] == result["shards"]["spec"]
    stop = result["preemption"]
    print(f"preemption: {stop}")
    assert stop["status"] == "ran" and stop["stopped_exit"] != 0 and stop["resumed_exit"] == 0
    assert "exit status 75" in stop["run_said"] and size["every"] < stop["stopped_at_step"] < size["steps"]
    assert stop["latest_at_stop"] == f"step_{stop['stopped_at_step']:08d}.pt" and stop["compared_steps"]
    assert stop["max_relative_loss_diff"] <= gpu_smoke.LOSS_CLOSE
