"""The README's first screen holds exactly the two set-up commands, and CI runs what they say."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block and readme.index(first_block.group(0)) < 1200, "set-up block not on the first screen"
    return [line for line in first_block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_two_setup_commands():
    install, test = _setup_commands()
    assert 'pip install -e ".[dev]"' in install and "launch/train.py" in install
    assert test.endswith("python -m pytest -q")


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    ci = (REPO / ".ci" / "run").read_text()
    install, test = _setup_commands()
    assert 'pip install -q -e ".[dev]"' in ci and 'pip install -e ".[dev]"' in install
    assert "python3 -m venv .venv" in ci and install.startswith("python3 -m venv .venv")
    assert "\npython -m pytest -q" in ci and test.endswith("python -m pytest -q")


def test_ci_also_runs_the_fast_tests_on_the_lowest_and_highest_python_the_readme_names():
    ci, other = (REPO / ".ci" / "run").read_text(), (REPO / ".ci" / "other_pythons").read_text()
    guide = " ".join((REPO / "docs" / "usage.md").read_text().split())  # the README links its set-up there
    assert "bash .ci/other_pythons" in ci and '-m "not slow"' in other
    assert 'the fast tests (`-m "not slow"`) on the lowest and the highest Python' in guide
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in pyproject and "(3.10 and 3.13 on the project's machine)" in guide
