"""results.report --recipe-per-arm: each arm (tower pair) at its own tuned recipe, one recipe up to the
seed within an arm (else the one-line refusal), the shared part stated once and each arm's seed-free hash
and differing fields, no warning banner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_report import make_run, run_cli

from results import report
from results.runs import ReportInputError

TUNED = {"transformer": {"lr": 5e-4, "warmup_steps": 160, "image_init": "original"},
         "mixer": {"lr": 1e-3, "warmup_steps": 40}}


def tuned_runs(root: Path, seeds=(0, 1)) -> list[Path]:
    return [make_run(root / tower, tower, seed, **TUNED[tower]) for tower in ("transformer", "mixer")
            for seed in seeds]


def seedless_by_hand(run: Path) -> str:
    recipe = json.loads((run / "config.json").read_text())["experiment"]["recipe"]
    del recipe["seed"]
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _table(text: str, first_cell: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell}")]


def test_each_arm_its_own_recipe_shared_part_once_per_arm_hash_and_fields_no_banner(tmp_path):
    runs = tuned_runs(tmp_path / "runs")
    with pytest.raises(ReportInputError, match="runs trained with different recipes"):
        report.write_report(runs, None, tmp_path / "refused")  # without the flag: refused, as before
    out = tmp_path / "report"
    result = report.write_report(runs, None, out, recipe_per_arm=True)
    assert list(result["headline"].index) == ["transformer-tiny", "mixer-tiny"]  # arms by tower pair
    assert result["headline"].loc["mixer-tiny", "seeds"] == 2
    assert result["banner"] == [] and result["verdicts"]
    text = (out / "report.md").read_text()
    assert "WARNING" not in text and "DIFFERS" not in text
    opening = text[:text.index("## Headline")]
    assert "Each arm ran its own tuned recipe" in opening and "results/tuning/tuning.md" in opening
    recipe = text[text.index("## Recipe"):text.index("## Figures")]
    for field in ("lr", "warmup_steps", "image_init"):  # differing: pointed to the per-arm table
        assert _table(recipe, field)[0] == [field, "per arm (next table)"]
    assert _table(recipe, "steps")[0] == ["steps", "40"]  # shared: stated once
    assert _table(recipe, "seed ")[0] == ["seed", "0, 1"]
    header = _table(recipe, "arm ")[0]
    assert header == ["arm", "seeds", "recipe sha256 (seed left out)", "image_init", "lr", "warmup_steps"]
    rows = {row[0]: row for row in _table(recipe, "transformer-tiny") + _table(recipe, "mixer-tiny")}
    assert rows["transformer-tiny"][1:] == ["0, 1", seedless_by_hand(runs[0]), "original", "0.0005", "160"]
    assert rows["mixer-tiny"][1:] == ["0, 1", seedless_by_hand(runs[2]), "default", "0.001", "40"]
    assert seedless_by_hand(runs[2]) == seedless_by_hand(runs[3])  # one hash for both seeds of the arm
    assert "--recipe-per-arm" in text[text.index("## Regenerate"):]


def test_runs_of_one_arm_with_different_recipes_are_refused_in_one_line(tmp_path):
    runs = tuned_runs(tmp_path / "runs", seeds=(0,))
    runs.append(make_run(tmp_path / "other", "mixer", 1, lr=2e-3, warmup_steps=40))
    with pytest.raises(ReportInputError) as error:
        report.write_report(runs, None, tmp_path / "out", recipe_per_arm=True)
    message = str(error.value)
    assert message.startswith("--recipe-per-arm: the runs of arm mixer-tiny were trained with different")
    assert "lr (0.001 in" in message and "0.002 in" in message and "warmup" not in message
    cli = run_cli(*map(str, runs), "--out", str(tmp_path / "o"), "--recipe-per-arm")
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1
    assert cli.stderr.startswith("error: --recipe-per-arm: the runs of arm mixer-tiny")


def test_recipe_per_arm_is_not_combined_with_allow_mixed_or_arm_per_run(tmp_path):
    runs = tuned_runs(tmp_path / "runs", seeds=(0,))
    for flag in ("--allow-mixed", "--arm-per-run"):
        cli = run_cli(*map(str, runs), "--out", str(tmp_path / "o"), "--recipe-per-arm", flag)
        assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and flag in cli.stderr


def test_one_shared_recipe_under_the_flag_reads_as_a_plain_report(tmp_path):
    runs = [make_run(tmp_path, tower, 0) for tower in ("transformer", "mixer")]
    report.write_report(runs, None, tmp_path / "out", recipe_per_arm=True)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Every run was trained with this recipe" in text and "its own tuned recipe" not in text
