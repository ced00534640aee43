"""The report reads in a minute at 1,280 px: a headline with metrics as rows and arms as columns, short
cells and title, the detail in CSV files, a short terminal summary, and (where Chromium is installed)
no horizontal overflow of the HTML page in a 1,280 px window."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_report import make_run

from results import report

WINDOW = 1280


@pytest.fixture(scope="module")
def eight_arms(tmp_path_factory):
    """8 arms (one lr each, one seed) through the CLI: what the 2x2 with both image families gives."""
    root = tmp_path_factory.mktemp("eight")
    runs = [make_run(root / f"lr{lr}", tower, 0, lr=lr) for tower in ("mixer", "transformer")
            for lr in (1e-3, 2e-3, 3e-3, 4e-3)]
    return root, runs


def test_eight_arms_headline_is_metrics_by_tagged_arms_with_short_cells(eight_arms, capsys):
    root, runs = eight_arms
    result = report.main([*map(str, runs), "--out", str(root / "report"), "--allow-mixed"])
    table = result["headline_table"]
    assert list(table.columns) == ["metric"] + [f"A{i}" for i in range(1, 9)]
    cells = table.drop(columns="metric").to_numpy().ravel()
    assert max(len(cell) for cell in cells) <= 16  # "1.578 ± 0.104": no intervals with 8 arms
    assert max(len(label) for label in table["metric"]) <= 50
    text = (root / "report" / "report.md").read_text()
    title = text.splitlines()[0]
    assert len(title) <= 80, title
    assert "None" not in text and "{'" not in text  # recipe values as a reader writes them
    assert "[scores.csv](scores.csv)" in text and len(text.splitlines()) < 200
    out, err = capsys.readouterr()
    lines = (out + err).splitlines()
    assert max(len(line) for line in lines) <= 120 and len(lines) <= 60, (out + err)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")
def test_the_html_page_fits_a_1280_px_window_in_chromium(eight_arms, tmp_path):
    root, runs = eight_arms
    out = root / "report"
    if not (out / "report.html").is_file():
        report.write_report(runs, None, out, allow_mixed=True, scores_required=False)
    page = (out / "report.html").read_text()
    probe = "<script>document.title = 'scroll ' + document.documentElement.scrollWidth;</script></body>"
    (out / "probe.html").write_text(page.replace("</body>", probe))
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             f"--window-size={WINDOW},2000", (out / "probe.html").as_uri()],
                            capture_output=True, text=True, timeout=120)
    width = int(re.search(r"<title>scroll (\d+)</title>", result.stdout).group(1))
    assert width <= WINDOW, f"the page is {width} px wide in a {WINDOW} px window"
