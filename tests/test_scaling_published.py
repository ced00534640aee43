"""The scaling comparison on results tables: a synthetic table generated from known laws is recovered through
`python -m results.scaling_report --table` (the toy sweep's code path), and on the shared published table
(Nezhurina et al. 2025) it reaches the verdict and the exponents docs/scaling-laws.md documents."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from results.published import COLUMNS, Row, from_nezhurina, write_table
from results.scaling_fit import Law, compare
from results.scaling_report import collect_table

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
GFLOPS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # forward GFLOPs per sample of 6 model sizes
SAMPLES = tuple(int(1e6 * 2 ** k) for k in range(8))


def synthetic_rows(family: str, law: Law, rng) -> list[Row]:
    """Every (size, samples) pair; error = law(compute) + a penalty for a model mis-sized for its budget
    (so only the compute frontier follows the law), plus noise of 0.2 points."""
    rows = []
    for i, gflops in enumerate(GFLOPS):
        for j, samples in enumerate(SAMPLES):
            compute = 3 * gflops * 1e9 * samples
            error = law(compute) + 2.0 * abs(i - j / 1.4) + rng.normal(0, 0.2)
            rows.append(Row(family, f"m{i}", "synthetic", "cosine", samples, "imagenet1k", "acc1",
                            round(100 - error, 3), "test", gflops))
    return rows


def test_a_table_generated_from_known_laws_is_recovered_through_the_cli(tmp_path):
    c0 = 3 * GFLOPS[0] * 1e9 * SAMPLES[0]
    laws = {"alpha_fam": Law(60.0, 0.30, 15.0, c0), "beta_fam": Law(60.0, 0.40, 12.0, c0)}
    rng = np.random.default_rng(0)
    table = tmp_path / "table.csv"
    write_table([r for f, law in laws.items() for r in synthetic_rows(f, law, rng)], table)
    assert table.read_text().splitlines()[0] == ",".join(COLUMNS)
    out = tmp_path / "report"
    cut = 3 * 16.0 * 1e9 * SAMPLES[5]  # fit up to here, predict the larger-compute frontier points
    done = subprocess.run([sys.executable, "-m", "results.scaling_report", "--table", str(table),
                           "--families", "alpha_fam", "beta_fam", "--dataset", "synthetic",
                           "--fit-below", str(cut),
                           "--bootstrap", "200", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    for family, truth in laws.items():
        fitted = summary["laws"][family]
        assert fitted["determined"] and fitted["fitted_points"] > 3
        assert fitted["alpha"] == pytest.approx(truth.alpha, abs=0.05), family
        assert fitted["e_inf"] == pytest.approx(truth.e_inf, abs=2.0), family
        assert fitted["intervals"]["alpha"][0] <= truth.alpha <= fitted["intervals"]["alpha"][1]
        assert fitted["prediction_error"] and max(abs(e) for e in fitted["prediction_error"]) < 1.0
    verdict = summary["verdicts"][0]
    assert verdict["kind"] == "verdict" and verdict["better"] == "beta_fam" and verdict["difference"] < 0
    assert [v["better"] for v in summary["verdicts"][1:]] == [None, None]
    report = (out / "report.md").read_text()
    assert report.index("## Measured: matched") < report.index("## Fitted laws")
    assert "the beta_fam's error is lower at 48 of 48 matched (size, budget) cells" in summary["verdict"]
    assert (out / "scaling.png").stat().st_size > 10_000


def test_a_table_without_the_asked_rows_is_refused_in_one_line(tmp_path):
    table = tmp_path / "table.csv"
    write_table(synthetic_rows("clip", Law(60.0, 0.3, 15.0, 1e15), np.random.default_rng(1)), table)
    done = subprocess.run([sys.executable, "-m", "results.scaling_report", "--table", str(table),
                           "--families", "clip", "mammut", "--dataset", "synthetic",
                           "--out", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "no mammut rows" in done.stderr


def test_the_published_clip_vs_mammut_comparison_on_the_shared_table(shared_data, tmp_path):
    """docs/scaling-laws.md, "validated on published runs": DataComp-1.4B, cosine, ImageNet; onset 90,
    fit below 3e21 training FLOPs (the paper's 1e12 forward GFLOPs). Documented: CLIP alpha 0.158, MaMMUT
    0.177 (tolerance 0.01 for the optimizer), MaMMUT's error lower at the largest measured compute."""
    source = shared_data / "published"
    table = tmp_path / "nezhurina.csv"
    write_table(from_nezhurina(source / "nezhurina2025_results.csv",
                               source / "nezhurina2025_model_profile.csv"), table)
    data = collect_table(table, ["clip", "mammut"], "imagenet1k", "datacomp_1b", "cosine")
    result = compare(data["points"], holdout=2, bootstrap=100, onset_error=90, fit_below=3e21)
    clip, mammut = result["fits"]["clip"], result["fits"]["mammut"]
    assert clip.law.alpha == pytest.approx(0.158, abs=0.01)
    assert mammut.law.alpha == pytest.approx(0.177, abs=0.01)
    assert mammut.law.alpha > clip.law.alpha  # MaMMUT scales better, as the paper concludes
    assert result["verdicts"][0]["difference"] == pytest.approx(-0.94, abs=0.3)  # mammut minus clip
    assert max(abs(e) for e in clip.prediction_error + mammut.prediction_error) < 2.5
    assert result["largest_compute"] == pytest.approx(3 * 370.28e9 * 3.072e9, rel=1e-6)  # CLIP H-14, 3B


def test_the_readme_states_the_committed_published_comparison_before_the_toy_sweep():
    readme = " ".join((REPO / "docs" / "results" / "scaling.md").read_text().split())  # the README links it
    published = json.loads((REPO / "results" / "scaling" / "published" / "summary.json").read_text())
    toy = json.loads((REPO / "results" / "scaling" / "report" / "summary.json").read_text())
    assert published["verdict"] in readme and toy["verdict"] in readme
    assert readme.index(published["verdict"]) < readme.index(toy["verdict"])
