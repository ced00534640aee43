"""--precision auto: bf16 where the device runs it natively, fp32 elsewhere; the resolved value is what the
run prints first, records and hashes. An AVX2-only CPU is emulated with torch's and oneDNN's own caps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch import train
from launch.config import Recipe, parse_experiment
from towers.precision import cpu_bf16_support, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
TOY = {"toy_seed": 0, "toy_version": 4}


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo (Linux)")
def test_auto_follows_the_cpu_flags_the_kernel_reports():
    flags = _cpu_flags()
    capped = any(key in os.environ for key in AVX2_ONLY)
    expected = ("avx512_bf16" in flags or "amx_tile" in flags) and "avx512f" in flags and not capped
    assert cpu_bf16_support()[0] == expected
    assert resolve_precision("auto", "cpu")[0] == ("bf16" if expected else "fp32")


def test_explicit_precisions_are_kept_and_unknown_ones_refused():
    assert resolve_precision("fp32", "cpu")[:1] == ("fp32",)
    assert resolve_precision("bf16", "cpu")[0] == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


def test_an_unresolved_recipe_has_no_hash():
    with pytest.raises(ValueError, match="resolve --precision auto first"):
        Recipe().sha256(1, TOY)
    resolved, why, _ = Recipe().with_precision("cpu")
    assert resolved.precision in ("bf16", "fp32") and why.startswith("auto: ")
    assert resolved.sha256(1, TOY) == Recipe(precision=resolved.precision).sha256(1, TOY)


def _train(tmp_path: Path, name: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(ROOT / "launch" / "train.py"), "--tower", "mixer", "--steps", "2",
            "--warmup-steps", "1", "--batch-size", "8", "--eval-samples", "16", "--workers", "0",
            "--runs-dir", str(tmp_path), "--name", name, *extra]
    return subprocess.run(argv, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_avx2_only_cpu_trains_auto_in_fp32_and_warns_on_explicit_bf16(tmp_path):
    auto = _train(tmp_path, "auto", AVX2_ONLY)
    assert auto.returncode == 0, auto.stderr[-2000:]
    first = auto.stdout.strip().splitlines()[0]
    assert first.startswith("precision: fp32 (auto: ") and "AVX2" in first, first
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert config["experiment"]["recipe"]["precision"] == "fp32"
    assert config["precision"]["requested"] == "auto" and config["cpu_capability"] == "AVX2"
    explicit, _ = parse_experiment(["--tower", "mixer", "--steps", "2", "--warmup-steps", "1",
                                    "--batch-size", "8", "--precision", "fp32"])
    train_data = config["recipe_identity"]["train_data"]
    assert config["recipe_sha256"] == explicit.recipe.sha256(1, train_data)  # auto hashes as resolved

    bf16 = _train(tmp_path, "bf16", AVX2_ONLY, "--precision", "bf16", "--steps", "1")
    assert bf16.returncode == 0, bf16.stderr[-2000:]
    warnings = [line for line in bf16.stderr.splitlines() if "emulated and slow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: --precision bf16 on a CPU without native")


def test_the_run_records_and_hashes_the_resolved_precision(tmp_path, capsys):
    argv = ["--tower", "mixer", "--steps", "2", "--warmup-steps", "1", "--batch-size", "8",
            "--eval-samples", "16", "--workers", "0", "--runs-dir", str(tmp_path), "--name", "here"]
    assert train.main(argv) == 0
    resolved = resolve_precision("auto", "cpu")[0]
    assert capsys.readouterr().out.startswith(f"precision: {resolved} (auto: ")
    config = json.loads((tmp_path / "here" / "config.json").read_text())
    assert config["experiment"]["recipe"]["precision"] == resolved
    assert config["recipe_sha256"] == parse_experiment(argv)[0].recipe.with_precision("cpu")[0].sha256(
        1, config["recipe_identity"]["train_data"])
