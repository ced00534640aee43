"""results.drivers.tuning on synthetic tuning grids with known numbers: the choice rule (ties, diverged runs,
stage 2), the pooled seed sd and the headline seeds against direct scipy computations, missing cells,
the dry-run plan, and the training path through results.drivers.reference (its training call replaced)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from results.drivers import reference, tuning
from results.drivers.tuning_grid import CHANCE_TOP1, TOY_CLASSES, Cell, stage1_cells

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "results" / "reference" / "runs" / "mixer-seed10"  # a committed run: the shape we copy

# (seed 0, seed 1) seen top-1 of every config; None marks a run with a non-finite training loss
SEEN = {
    "transformer": {("1e-3", 40): (55, 59), ("1e-3", 160): (52, 54), ("5e-4", 40): (50, 46),
                    ("5e-4", 160): (44, 46), ("2e-3", 40): (70, None), ("2e-3", 160): (58, 62),
                    ("2.5e-4", 40): (30, 31), ("2.5e-4", 160): (25, 2.0),
                    ("2e-3", 160, "original"): (63, 65)},
    "mixer": {("1e-3", 40): (66, 68), ("1e-3", 160): (70.08, 70.0), ("5e-4", 40): (60, 61),
              ("5e-4", 160): (58, 60), ("2e-3", 40): (69.0, 71.0), ("2e-3", 160): (65, 66),
              ("2.5e-4", 40): (50, 52), ("2.5e-4", 160): (48, 49),
              ("2e-3", 40, "original"): (60, 64)},
}
# a tie at 0.1 point: mixer lr 1e-3/160 (70.04) and 2e-3/40 (70.00); the lower val loss (2e-3/40) wins
VAL_LOSS = {("mixer", "1e-3", 160): 0.65, ("mixer", "2e-3", 40): 0.60}


def write_run(run_dir: Path, tower: str, lr: str, warmup: int, seed: int, seen: float | None,
              init: str = "library") -> None:
    """A finished run folder in the shape launch/train.py writes (copied from a committed run)."""
    config = json.loads((TEMPLATE / "config.json").read_text())
    identity = {**config["recipe_identity"], "lr": float(lr), "warmup_steps": warmup, "seed": seed}
    if init != "library":
        identity["image_init"] = init
    recipe = {**config["experiment"]["recipe"], "lr": float(lr), "warmup_steps": warmup, "seed": seed}
    config.update(name=run_dir.name, model_name=f"{tower}-w96", recipe_identity=identity,
                  recipe_sha256=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
                  experiment={**config["experiment"], "image_tower": tower, "text_tower": tower,
                              "recipe": recipe})
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    top1 = 60.0 if seen is None else float(seen)
    val_loss = VAL_LOSS.get((tower, lr, warmup), 0.7)
    lines = [{"step": 640, "samples_seen": 81920, "loss": None if seen is None else 0.5, "lr": float(lr)},
             {"step": 640, "samples_seen": 81920, "eval/toy_top1_seen": top1, "eval/toy_val_loss": val_loss}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "final_eval.json").write_text(json.dumps(
        {"step": 640, "eval/toy_top1_seen": top1, "eval/toy_top1_held_out": top1 - 10,
         "eval/toy_val_loss": val_loss}))


def write_grid(root: Path, skip: set[tuple] = frozenset()) -> None:
    for tower, configs in SEEN.items():
        for key, values in configs.items():
            cell = Cell(tower, key[0], key[1], *key[2:])
            for seed, seen in enumerate(values):
                if (tower, *key, seed) not in skip:
                    write_run(cell.run_dir(root, seed), tower, cell.lr, cell.warmup, seed, seen, cell.init)


def test_the_choice_rule_pooled_sd_and_headline_seeds(tmp_path, capsys):
    write_grid(tmp_path)
    assert tuning.main(["--report-only", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "tuning.json").read_text())
    arms = summary["arms"]
    assert summary["complete"] and summary["missing"] == []
    # the Transformer: lr 2e-3/40 (70.0) diverged on seed 1, so 2e-3/160 is its stage-1 best; the init
    # variant there (64.0) beats it. The Mixer: a tie won by the lower val loss; its init variant loses.
    assert arms["transformer"]["stage1_best"] == "lr 2e-3, warmup 160"
    assert arms["transformer"]["chosen"] == "lr 2e-3, warmup 160, init original"
    assert arms["mixer"]["stage1_best"] == arms["mixer"]["chosen"] == "lr 2e-3, warmup 40"
    rows = {row["config"]: row for row in arms["transformer"]["configs"]}
    assert rows["lr 2e-3, warmup 40"]["diverged_seeds"] == [1] and not rows["lr 2e-3, warmup 40"]["eligible"]
    assert rows["lr 2.5e-4, warmup 160"]["diverged_seeds"] == [1]  # 2.0% is within twice chance
    assert rows["lr 2e-3, warmup 160"]["top1_seen_by_seed"] == [58, 62]

    # pooled sd over the 3 best eligible configs, each pair's variance (a - b)^2 / 2, averaged
    pooled = {"transformer": [(63, 65), (58, 62), (55, 59)], "mixer": [(69, 71), (70.08, 70.0), (66, 68)]}
    for tower, pairs in pooled.items():
        expected = math.sqrt(np.mean([(a - b) ** 2 / 2 for a, b in pairs]))
        assert arms[tower]["seed_sd"] == pytest.approx(expected) and arms[tower]["seed_sd_df"] == 3
    assert arms["mixer"]["seed_sd_pooled_over"] == ["lr 2e-3, warmup 40", "lr 1e-3, warmup 160",
                                                   "lr 1e-3, warmup 40"]

    # the seeds: the fewest n whose Welch interval (scipy's, on samples with exactly these sds) is <= 3
    def half_width(n: int) -> float:
        z = np.linspace(-1, 1, n)
        z = (z - z.mean()) / z.std(ddof=1)
        a, b = 60 + arms["transformer"]["seed_sd"] * z, 70 + arms["mixer"]["seed_sd"] * z[::-1]
        interval = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
        return (interval.high - interval.low) / 2

    n = summary["power"]["seeds_per_arm"]
    assert half_width(n) <= 3 < half_width(n - 1)
    assert summary["power"]["half_width_at_n"] == pytest.approx(half_width(n))
    assert summary["power"]["fresh_seeds"] == list(range(23, 23 + n))

    recipe = summary["headline_recipe"]
    # both arms chose lr 2e-3: it is shared; the warmup and the init are each arm's own
    assert recipe["arms"]["transformer"]["recipe_fields"] == {"image_init": "original", "warmup_steps": 160}
    assert recipe["arms"]["mixer"]["recipe_fields"] == {"image_init": None, "warmup_steps": 40}
    assert recipe["shared"]["lr"] == 0.002 and recipe["shared"]["steps"] == 640
    assert recipe["shared"]["precision"] == "bf16" and "seed" not in recipe["shared"]
    config = json.loads(Cell("mixer", "2e-3", 40).run_dir(tmp_path, 1).joinpath("config.json").read_text())
    assert recipe["arms"]["mixer"]["recipe_sha256_by_seed"]["1"] == config["recipe_sha256"]
    commands = summary["headline_commands"]
    assert len(commands) == 3 and commands == capsys.readouterr().out.strip().splitlines()[-3:]
    flags = shlex.split(commands[0])
    assert flags[flags.index("--seeds") + 1:flags.index("--out")] == [str(s) for s in range(23, 23 + n)]
    assert flags[flags.index("--train-flags") + 1] == "--lr 2e-3 --warmup-steps 160 --precision bf16 " \
                                                      "--image-init original"

    text = (tmp_path / "tuning.md").read_text()
    assert ("| lr 2e-3, warmup 40 | 65.0 (70.0, 60.0), diverged: seed 1 | 55.0 | 0.700 | "
            "**70.0** (69.0, 71.0) | 60.0 | 0.600 |") in text
    assert "[lr 2e-3, warmup 160] **64.0** (63.0, 65.0)" in text and "Partial grid" not in text


def test_a_missing_cell_is_named_and_the_choice_is_provisional(tmp_path):
    write_grid(tmp_path, skip={("mixer", "5e-4", 160, 1)})
    assert tuning.main(["--report-only", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "tuning.json").read_text())
    assert summary["missing"] == [{"tower": "mixer", "config": "lr 5e-4, warmup 160",
                                   "folder": "lr5e-4-warmup160", "seeds": [1]}]
    assert not summary["complete"] and summary["headline_commands"] == []
    mixer = summary["arms"]["mixer"]
    # stage 1 incomplete: no stage 2 read, the choice is the best finished config so far
    assert len(mixer["configs"]) == 8 and mixer["chosen"] == "lr 2e-3, warmup 40"
    assert not mixer["chosen_is_final"]
    text = (tmp_path / "tuning.md").read_text()
    assert "**Partial grid**: missing mixer lr 5e-4, warmup 160 (seed 1)." in text
    assert "| lr 5e-4, warmup 160 |" in text and "58.0 (58.0), missing seed 1" in text
    assert "Stage 2 (init original) has not started for: mixer" in text


def test_the_dry_run_lists_exactly_the_missing_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reference, "_run", lambda *a: pytest.fail("a dry run trains nothing"))
    # the Transformer's stage 1 is done; the Mixer has two runs left and no stage 2 yet
    skip = {("transformer", "2e-3", 160, "original", 0), ("mixer", "1e-3", 40, 1),
            ("mixer", "2.5e-4", 160, 0)}
    write_grid(tmp_path, skip | {("mixer", "2e-3", 40, "original", seed) for seed in (0, 1)})
    assert tuning.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    planned = {line.split(" ", 1)[1] for line in out if line.startswith("train ")}
    assert planned == {str(tmp_path / p) for p in (
        "transformer/lr2e-3-warmup160-init-original/runs/transformer-seed0",
        "mixer/lr1e-3-warmup40/runs/mixer-seed1", "mixer/lr2.5e-4-warmup160/runs/mixer-seed0")}
    reused = [line for line in out if line.startswith("reuse ")]
    assert len(reused) == 2 * 8 * 2 + 1 - 2  # stage 1 of both arms and the Transformer's stage-2 seed 1
    assert "wait  stage 2 of mixer: after its stage 1 (2 runs to go)" in out
    assert out[-1] == "3 runs to train, 31 reused"
    assert not (tmp_path / "tuning.md").exists()


def _fake_training(calls: list[list[str]]):
    """The reference driver's training call, replaced: writes the run its command names, SEEN's numbers."""
    def run(command: list[str], log: Path) -> float:
        calls.append(command)
        flag = {name: command[command.index(name) + 1] for name in
                ("--tower", "--seed", "--runs-dir", "--name", "--lr", "--warmup-steps", "--precision")}
        init = command[command.index("--image-init") + 1] if "--image-init" in command else "library"
        key = (flag["--lr"], int(flag["--warmup-steps"]), *([init] if init != "library" else []))
        seen = SEEN[flag["--tower"]][key][int(flag["--seed"])]
        write_run(Path(flag["--runs-dir"]) / flag["--name"], flag["--tower"], flag["--lr"],
                  int(flag["--warmup-steps"]), int(flag["--seed"]), seen, init)
        return 0.0
    return run


def test_the_driver_trains_stage_1_then_stage_2_where_the_lead_puts_them_and_reuses(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(reference, "_run", _fake_training(calls))
    done = Cell("mixer", "1e-3", 40).run_dir(tmp_path, 0)  # a run the background job has finished
    write_run(done, "mixer", "1e-3", 40, 0, 66)
    assert tuning.main(["--out", str(tmp_path), "--allow-dirty"]) == 0
    assert len(calls) == 2 * 8 * 2 - 1 + 2 * 2
    assert all(c[c.index("--precision") + 1] == "bf16" and "launch/train.py" in c for c in calls)
    stage2 = [i for i, c in enumerate(calls) if "--image-init" in c]
    assert stage2 == list(range(len(calls) - 4, len(calls)))  # stage 2 after every stage-1 run
    assert {(c[c.index("--tower") + 1], c[c.index("--lr") + 1], c[c.index("--warmup-steps") + 1])
            for c in (calls[i] for i in stage2)} == {("transformer", "2e-3", "160"), ("mixer", "2e-3", "40")}
    assert (tmp_path / "transformer" / "lr2.5e-4-warmup160" / "runs" / "transformer-seed1" /
            "final_eval.json").is_file()
    assert json.loads((tmp_path / "tuning.json").read_text())["complete"]
    calls.clear()
    assert tuning.main(["--out", str(tmp_path), "--allow-dirty"]) == 0 and calls == []


def test_a_run_in_the_wrong_folder_is_a_one_line_error(tmp_path, capsys):
    write_run(Cell("mixer", "5e-4", 40).run_dir(tmp_path, 0), "mixer", "1e-3", 40, 0, 60)
    assert tuning.main(["--report-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr 0.001" in err
    assert "lr5e-4-warmup40/runs/mixer-seed0/config.json" in err


def test_the_rule_is_stated_in_the_docs_and_the_chance_level_matches_the_toy_set():
    from benchmarks.data.toy import CLASS_NAMES

    assert TOY_CLASSES == len(CLASS_NAMES) and CHANCE_TOP1 == pytest.approx(100 / 64)
    docs = " ".join((REPO / "docs" / "toy-protocol.md").read_text().split())
    assert tuning.choice_rule() in docs
    assert re.match(r"Each arm's headline recipe is the config with the highest mean seen-class top-1",
                    tuning.choice_rule())
    lrs = ("1e-3", "5e-4", "2e-3", "2.5e-4")  # as the background job spells them
    assert [c.folder for c in stage1_cells("mixer")] == [f"lr{lr}-warmup{w}" for lr in lrs for w in (40, 160)]
