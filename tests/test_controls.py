"""results.drivers.controls: the plan from a tuning.json (runs, flags, folders, seeds), the refusal without a
chosen recipe, the pooling and toy-variant tables from run folders with known numbers (the interval
against the Welch formula), the three-arm calibration report, the training path through
results.drivers.reference (its training call replaced) and one tiny real pooling run."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from results import controls_report
from results.drivers import controls, reference, tuning
from results.drivers.tuning_grid import Cell, Measured
from runfolder import code_version
from runfolder.records import ConfigRecord, final_eval_record, metrics_line, stamped, write_json

FLAGS = {"transformer": "--lr 1e-3 --warmup-steps 160 --precision bf16",
         "mixer": "--lr 2e-3 --warmup-steps 40 --precision bf16 --image-init original"}
FOLDERS = {"transformer": "lr1e-3-warmup160", "mixer": "lr2e-3-warmup40-init-original"}
RECIPES = {"transformer": {"lr": 1e-3, "warmup_steps": 160},
           "mixer": {"lr": 2e-3, "warmup_steps": 40, "image_init": "original"}}


def write_tuning(path: Path, complete: bool = True, fresh_seeds: list[int] | None = None) -> Path:
    """tuning.json in the shape results.drivers.tuning.summarize writes (the keys the driver reads)."""
    arms = {tower: {"complete": complete, "chosen": "…", "configs": [
        {"folder": "lr5e-4-warmup40", "chosen": False}, {"folder": FOLDERS[tower], "chosen": True}]}
        for tower in FLAGS}
    summary = {"complete": complete, "arms": arms,
               "headline_recipe": {"arms": {t: {"train_flags": f} for t, f in FLAGS.items()}} if complete
               else None,
               "power": {"fresh_seeds": fresh_seeds} if fresh_seeds else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    return path


def write_run(run_dir: Path, tower: str, seed: int, seen: float, held_out: float = 40.0,
              val_loss: float = 0.9, **recipe: object) -> Path:
    """A finished run folder through runfolder's writers (config.json, metrics.jsonl, final_eval.json)."""
    identity = {"steps": 640, "lr": 1e-3, "warmup_steps": 40, "precision": "bf16", "seed": seed,
                "train_data": {"toy_seed": 0, "toy_version": 5}, "context_length": 32,
                "text_mask": "caption", "global_batch_size": 128, **RECIPES.get(tower, {}), **recipe}
    sha = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    text = "transformer" if tower == "cnn" else tower
    experiment = {"image_tower": tower, "text_tower": text, "variant": "w96", "embed_dim": 96,
                  "token_mixing": "caption", "recipe": identity}
    run_dir.mkdir(parents=True)
    ConfigRecord(name=run_dir.name, model_name=f"{tower}-w96", experiment=experiment, recipe_sha256=sha,
                 recipe_identity=identity, run_options={}, command="launch/train.py", git_commit="abc",
                 git_diff_sha256=None, versions={}, world_size=1, global_batch_size=128, device="cpu",
                 torch_threads=1, cpu_capability="AVX512", precision={}, device_settings={},
                 params={"total_params": 1}, flops_per_sample={"train_gflops": 1.0}
                 ).write(run_dir / "config.json")
    final = {"eval/toy_top1_seen": seen, "eval/toy_top1_held_out": held_out, "eval/toy_val_loss": val_loss}
    lines = [{"step": 640, "samples_seen": 81920, "loss": 0.5, "lr": identity["lr"]},
             {"step": 640, "samples_seen": 81920, **final}]
    (run_dir / "metrics.jsonl").write_text("".join(metrics_line(stamped(line, 1.0, 0.0)) for line in lines))
    write_json(run_dir / "final_eval.json", final_eval_record(640, final))
    return run_dir


def _dry_run(tmp_path: Path, capsys, *argv: str) -> list[str]:
    assert controls.main(["--dry-run", "--out", str(tmp_path / "results"), *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_plan_names_every_run_its_flags_folder_and_seed(tmp_path, capsys):
    tuning_json = write_tuning(tmp_path / "tuning" / "tuning.json", fresh_seeds=list(range(30, 37)))
    out = tmp_path / "results"
    write_run(out / "pooling" / "runs" / "mixer-mappool-seed1", "mixer", 1, 60.0)  # finished: reused
    lines = _dry_run(tmp_path, capsys, "--tuning", str(tuning_json))
    t, m = FLAGS["transformer"], FLAGS["mixer"]
    expected = [f"train {out}/pooling/runs/transformer-avgpool-seed0  --tower transformer --seed 0 {t} "
                "--image-pool avg",
                f"train {out}/pooling/runs/mixer-mappool-seed0  --tower mixer --seed 0 {m} --image-pool map",
                f"train {out}/pooling/runs/transformer-avgpool-seed1  --tower transformer --seed 1 {t} "
                "--image-pool avg",
                f"reuse {out}/pooling/runs/mixer-mappool-seed1  --tower mixer --seed 1 {m} --image-pool map"]
    for variant, flag in (("hard", "--toy-task hard"), ("toy_seed1", "--toy-seed 1")):
        for seed in (0, 1, 2):
            expected += [f"train {out}/toy_variants/{variant}/runs/{tower}-seed{seed}  --tower {tower} "
                         f"--seed {seed} {FLAGS[tower]} {flag}" for tower in ("transformer", "mixer")]
    # the first 5 of the headline's fresh seeds, at the default recipe in bf16
    expected += [f"train {out}/reference_tuned/runs/cnn-seed{seed}  --tower cnn --seed {seed} "
                 "--precision bf16" for seed in range(30, 35)]
    assert lines == expected + ["20 runs to train, 1 reused"]

    lines = _dry_run(tmp_path, capsys, "--tuning", str(tuning_json), "--only", "variants", "--towers",
                     "mixer", "--variant-seeds", "5")
    assert lines == [f"train {out}/toy_variants/hard/runs/mixer-seed5  --tower mixer --seed 5 {m} "
                     "--toy-task hard",
                     f"train {out}/toy_variants/toy_seed1/runs/mixer-seed5  --tower mixer --seed 5 {m} "
                     "--toy-seed 1", "2 runs to train, 0 reused"]
    # no fresh seeds recorded: 23-27, the seeds the headline starts at
    lines = _dry_run(tmp_path, capsys, "--tuning", str(write_tuning(tmp_path / "t2" / "tuning.json")),
                     "--only", "calibration")
    assert [line.split()[1].rsplit("seed", 1)[1] for line in lines[:-1]] == ["23", "24", "25", "26", "27"]


@pytest.mark.parametrize("case", ["incomplete", "missing", "one recipe"])
def test_without_a_chosen_recipe_the_driver_refuses_in_one_line_naming_the_file(tmp_path, capsys, case):
    path = tmp_path / "tuning.json"
    if case != "missing":
        write_tuning(path, complete=False)
    argv = ["--dry-run", "--tuning", str(path), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as refused:
        controls.main(argv + (["--recipe", f"mixer={FLAGS['mixer']}"] if case == "one recipe" else []))
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: {path}")
    assert ("missing" if case == "missing" else '"complete": false') in err and "--recipe" in err


def test_both_recipes_given_replace_an_incomplete_grid_and_find_their_baselines(tmp_path, capsys):
    path = write_tuning(tmp_path / "tuning.json", complete=False)
    flags = {"transformer": "--lr 5e-4 --warmup-steps 40 --precision bf16", "mixer": FLAGS["mixer"]}
    recipes = controls.read_recipes(path, [f"{t}={f}" for t, f in flags.items()])
    assert recipes.flags == flags and recipes.tuning_root == tmp_path
    assert recipes.folders == {"transformer": "lr5e-4-warmup40", "mixer": "lr2e-3-warmup40-init-original"}
    assert controls.grid_folder("mixer", "--precision bf16") is None
    with pytest.raises(SystemExit) as refused:
        controls.main(["--dry-run", "--tuning", str(path), "--recipe", "vit=--lr 1e-3"])
    assert refused.value.code == 2 and "--recipe vit=--lr 1e-3: expected TOWER" in capsys.readouterr().err


# seen, held-out, val loss of (default pool, other pool) on seeds 0 and 1
POOLING = {"transformer": [((55.0, 41.0, 0.90), (30.0, 28.0, 1.24)),
                           ((54.0, 42.0, 0.88), (27.4, 25.0, 1.27))],
           "mixer": [((70.0, 60.0, 0.60), (72.5, 61.0, 0.58)), ((69.0, 58.0, 0.62), (68.0, 59.5, 0.61))]}


def _pooling_runs(tuning_root: Path, out: Path, other_recipe: dict | None = None) -> None:
    for tower, seeds in POOLING.items():
        pool = controls.OTHER_POOL[tower]
        for seed, (default, other) in enumerate(seeds):
            baseline = tuning_root / tower / FOLDERS[tower] / "runs" / f"{tower}-seed{seed}"
            write_run(baseline, tower, seed, *default)
            control = out / "pooling" / "runs" / f"{controls.POOL_PREFIX[tower]}-seed{seed}"
            write_run(control, tower, seed, *other, image_pool=pool, **(other_recipe or {}))


def test_the_pooling_report_gives_each_seed_and_the_mean_difference(tmp_path, capsys):
    tuning_json = write_tuning(tmp_path / "tuning" / "tuning.json")
    out = tmp_path / "results"
    _pooling_runs(tmp_path / "tuning", out)
    assert controls.main(["--report-only", "--only", "pooling", "--tuning", str(tuning_json),
                          "--out", str(out)]) == 0
    report = json.loads((out / "pooling" / "report.json").read_text())
    for tower, seeds in POOLING.items():
        arm = report["towers"][tower]
        for row, (default, other) in zip(arm["seeds"], seeds, strict=True):
            assert [row["default"][k] for k in ("toy_top1_seen", "toy_top1_held_out", "toy_val_loss")] == \
                list(default)
            assert row["difference"]["toy_top1_seen"] == pytest.approx(other[0] - default[0])
        assert arm["n_pairs"] == 2
        for index, key in enumerate(("toy_top1_seen", "toy_top1_held_out", "toy_val_loss")):
            expected = np.mean([other[index] - default[index] for default, other in seeds])
            assert arm["mean_difference"][key] == pytest.approx(expected)
    assert report["towers"]["transformer"]["mean_difference"]["toy_top1_seen"] == pytest.approx(-25.8)
    text = (out / "pooling" / "report.md").read_text()
    assert "| 0 | 55.0 | 30.0 | -25.0 | 41.0 | 28.0 | -13.0 | 0.900 | 1.240 | +0.340 |" in text
    assert "seen top-1 (%) +0.8" in text  # the Mixer's mean: (+2.5 - 1.0) / 2
    assert "interval" not in text.split("\n\n", 2)[2]  # two seeds: no interval, no verdict

    # a control trained at another lr is not the baseline's recipe up to the pool: refused, naming it
    other_json = write_tuning(tmp_path / "other_grid" / "tuning.json")
    _pooling_runs(other_json.parent, tmp_path / "other", {"lr": 5e-4})
    assert controls.main(["--report-only", "--only", "pooling", "--tuning", str(other_json),
                          "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and " lr;" in err
    assert "transformer-avgpool-seed0: differs from its baseline" in err


def _welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """The 95% Welch interval of mean(a) - mean(b) by its formula (Welch-Satterthwaite df)."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    difference = np.mean(a) - np.mean(b)
    return difference - half, difference + half


# seen top-1 per condition and arm: the standard headline (seeds 23-27), the hard task, toy seed 1 (0-2)
VARIANTS = {"standard": {"transformer": [55.0, 54.0, 57.0, 53.0, 56.0],
                         "mixer": [69.0, 71.0, 70.0, 68.0, 72.0]},
            "hard": {"transformer": [30.0, 32.0, 29.0], "mixer": [40.0, 43.0, 41.0]},
            "toy_seed1": {"transformer": [50.0, 58.0, 47.0], "mixer": [52.0, 49.0, 60.0]}}


def test_the_variant_summary_and_the_calibration_report_from_known_runs(tmp_path):
    out = tmp_path / "results"
    for condition, arms in VARIANTS.items():
        folder = out / ("reference_tuned" if condition == "standard" else f"toy_variants/{condition}")
        seeds = range(23, 28) if condition == "standard" else range(3)
        extra = {"hard": {"train_data": {"toy_seed": 0, "toy_version": 5, "toy_task": "hard"}},
                 "toy_seed1": {"train_data": {"toy_seed": 1, "toy_version": 5}}}.get(condition, {})
        for tower, values in arms.items():
            for seed, seen in zip(seeds, values, strict=True):
                write_run(folder / "runs" / f"{tower}-seed{seed}", tower, seed, seen, **extra)
    cnn = [40.0, 42.0, 41.0, 39.0, 43.0]
    for seed, seen in zip(range(23, 28), cnn, strict=True):
        write_run(out / "reference_tuned" / "runs" / f"cnn-seed{seed}", "cnn", seed, seen)
    tuning_json = write_tuning(tmp_path / "tuning" / "tuning.json")
    assert controls.main(["--report-only", "--only", "variants", "calibration", "--tuning", str(tuning_json),
                          "--out", str(out)]) == 0

    summary = json.loads((out / "toy_variants" / "summary.json").read_text())
    rows = {row["condition"]: row for row in summary["conditions"]}
    for condition, arms in VARIANTS.items():
        row = rows[condition]
        low, high = _welch(arms["mixer"], arms["transformer"])
        assert (row["low"], row["high"]) == (pytest.approx(low), pytest.approx(high))
        assert row["difference"] == pytest.approx(np.mean(arms["mixer"]) - np.mean(arms["transformer"]))
        assert row["n"] == {"transformer": len(arms["transformer"]), "mixer": len(arms["mixer"])}
    assert rows["standard"]["ranking_holds"] == "the reference: Mixer ahead"
    assert rows["hard"]["ranking_holds"] == "yes" and rows["hard"]["low"] > 0
    assert rows["toy_seed1"]["ranking_holds"] == "not resolved at n=3/3" and rows["toy_seed1"]["low"] < 0
    table = (out / "toy_variants" / "summary.md").read_text()
    assert f"| hard toy task | 3 / 3 | 30.3 | 41.3 | +11.0 [{low_high(rows['hard'])}] | yes |" in table
    for variant in ("hard", "toy_seed1"):  # each variant's own report: both arms at their own recipe
        text = (out / "toy_variants" / variant / "report" / "report.md").read_text()
        assert "--recipe-per-arm" in text and "--primary toy_top1_seen" in text

    # the calibration report: three arms, each against the Transformer (the first arm)
    with open(out / "reference_tuned" / "calibration" / "verdicts.csv", encoding="utf-8") as file:
        primary = {row["arm"]: row for row in csv.DictReader(file) if row["metric"] == "toy_top1_seen"}
    assert set(primary) == {"mixer-w96", "cnn-w96"}
    assert {row["baseline"] for row in primary.values()} == {"transformer-w96"}
    assert float(primary["cnn-w96"]["difference"]) == pytest.approx(np.mean(cnn) - 55.0)
    assert not (out / "reference_tuned" / "report").exists()  # the headline report is left alone


def test_a_reversed_ranking_and_a_missing_standard_are_said_as_such(tmp_path):
    arms = {}
    for condition, values in (("standard", {"transformer": [50, 52, 51], "mixer": [60, 61, 63]}),
                              ("flipped", {"transformer": [50, 52, 51], "mixer": [40, 41, 43]})):
        arms[condition] = {tower: [write_run(tmp_path / condition / f"{tower}-seed{seed}", tower, seed, seen)
                                   for seed, seen in enumerate(seens)] for tower, seens in values.items()}
    rows = controls_report.variants_summary([(c, c, a) for c, a in arms.items()])["conditions"]
    assert [row["ranking_holds"] for row in rows] == ["the reference: Mixer ahead", "no: reversed"]
    rows = controls_report.variants_summary([("standard", "standard", {}),
                                             ("flipped", "flipped", arms["flipped"])])["conditions"]
    assert [row["ranking_holds"] for row in rows] == ["needs both arms' runs",
                                                      "no standard condition to compare with"]


def low_high(row: dict) -> str:
    return f"{row['low']:+.1f}, {row['high']:+.1f}"


def _fake_training(calls: list[list[str]]):
    """results.drivers.reference's training call, replaced: writes the run its command names."""
    def run(command: list[str], log: Path) -> float:
        calls.append(command)
        flag = {name: command[command.index(name) + 1]
                for name in ("--tower", "--seed", "--runs-dir", "--name")}
        tower = flag["--tower"]
        pool = {"image_pool": command[command.index("--image-pool") + 1]} if "--image-pool" in command else {}
        write_run(Path(flag["--runs-dir"]) / flag["--name"], tower, int(flag["--seed"]), 50.0, **pool)
        return 0.0
    return run


def test_the_driver_trains_through_the_reference_driver_and_resumes(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(reference, "_run", _fake_training(calls))
    tuning_json = write_tuning(tmp_path / "tuning" / "tuning.json", fresh_seeds=list(range(23, 36)))
    out = tmp_path / "results"
    argv = ["--tuning", str(tuning_json), "--out", str(out), "--allow-dirty", "--only", "pooling",
            "calibration", "--extra-train-flags", "--cpu-threads 1"]
    assert controls.main(argv) == 0
    trained = [(c[c.index("--name") + 1], shlex.join(c[c.index("--eval-every") + 2:])) for c in calls]
    assert trained == [
        ("transformer-avgpool-seed0", f"{FLAGS['transformer']} --image-pool avg --cpu-threads 1"),
        ("mixer-mappool-seed0", f"{FLAGS['mixer']} --image-pool map --cpu-threads 1"),
        ("transformer-avgpool-seed1", f"{FLAGS['transformer']} --image-pool avg --cpu-threads 1"),
        ("mixer-mappool-seed1", f"{FLAGS['mixer']} --image-pool map --cpu-threads 1"),
        *((f"cnn-seed{seed}", "--precision bf16 --cpu-threads 1") for seed in range(23, 28))]
    assert all(c[c.index("--tower") + 1] == n.split("-")[0] for c, (n, _) in zip(calls, trained, strict=True))
    assert (out / "pooling" / "report.md").is_file()  # baselines missing: the table says so
    assert "Not finished (no final_eval.json)" in (out / "pooling" / "report.md").read_text()
    calls.clear()
    assert controls.main(argv) == 0 and calls == []  # every run finished: nothing trained again


def test_a_dirty_tree_is_refused_before_any_run_and_the_driver_imports_no_model_code(tmp_path, monkeypatch,
                                                                                      capsys):
    calls: list[list[str]] = []
    monkeypatch.setattr(reference, "_run", _fake_training(calls))
    checkout = tmp_path / "checkout"  # a committed git checkout standing in for the code's, then edited
    checkout.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    (checkout / "train.py").write_text("steps = 640\n")
    for argv in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *argv], cwd=checkout, check=True, capture_output=True)
    (checkout / "train.py").write_text("steps = 2\n")
    monkeypatch.setattr(code_version, "REPO_ROOT", checkout)
    argv = ["--only", "pooling", "--tuning", str(write_tuning(tmp_path / "tuning" / "tuning.json")),
            "--out", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as refused:
        controls.main(argv)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "train.py" in err and "--allow-dirty" in err and calls == []
    assert controls.main([*argv, "--report-only"]) == 0 and calls == []  # a report trains nothing

    code = ("import sys, results.drivers.controls; "
            "sys.exit(bool([m for m in ('torch', 'towers', 'launch') if m in sys.modules]))")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          timeout=120).returncode == 0


def test_the_headline_report_command_names_its_two_arms_not_the_cnn_beside_them():
    """The calibration runs share results/reference_tuned/runs/: the tuning grid's headline report command
    names the Transformer's and the Mixer's runs, the Transformer first (the baseline), not a glob."""
    chosen = {tower: Measured(Cell(tower, "1e-3", 40)) for tower in ("transformer", "mixer")}
    report = tuning.headline_commands(chosen, 3, "results/reference_tuned")[-1]
    assert report.startswith("python -m results.report results/reference_tuned/runs/transformer-seed* "
                             "results/reference_tuned/runs/mixer-seed* --scores")


@pytest.mark.slow
def test_a_tiny_real_pooling_run_beside_its_tuning_baseline(tmp_path):
    """Two steps of the Mixer's chosen config on seed 0 (the tuning driver's own call), then the driver:
    it trains the map-pool control of seed 0 and reuses seed 1's (a finished run folder written here)."""
    tiny = "--steps 2 --batch-size 16 --eval-samples 64 --workers 0 --cpu-threads 1"
    cell = Cell("mixer", "2e-3", 1)
    tuning.train_cell(tmp_path / "tuning", cell, [0], tiny, allow_dirty=True)
    out = tmp_path / "results"
    write_run(cell.run_dir(tmp_path / "tuning", 1), "mixer", 1, 61.0)
    write_run(out / "pooling" / "runs" / "mixer-mappool-seed1", "mixer", 1, 64.5, image_pool="map")
    assert controls.main(["--only", "pooling", "--towers", "mixer",
                          "--tuning", str(tmp_path / "tuning" / "t.json"),
                          "--recipe", f"transformer={FLAGS['transformer']}", "--recipe",
                          f"mixer={cell.train_flags()}", "--out", str(out), "--extra-train-flags", tiny,
                          "--allow-dirty"]) == 0
    report = json.loads((out / "pooling" / "report.json").read_text())["towers"]["mixer"]
    assert report["n_pairs"] == 2 and report["other_pool"].startswith("map")
    assert report["seeds"][1]["difference"]["toy_top1_seen"] == pytest.approx(3.5)
    config = json.loads((out / "pooling" / "runs" / "mixer-mappool-seed0" / "config.json").read_text())
    identity = config["recipe_identity"]
    assert (identity["image_pool"], identity["seed"], identity["lr"], identity["steps"]) == \
        ("map", 0, 2e-3, 2)
    seed0 = report["seeds"][0]
    assert 0 <= seed0["other"]["toy_top1_seen"] <= 100 and math.isfinite(seed0["difference"]["toy_val_loss"])
