"""The code a run was trained with: the git commit, whether the work tree had uncommitted changes and the
sha256 of that diff, and the training drivers' guard that refuses such a tree unless ``--allow-dirty``.

Standard library only (git through ``subprocess``), so the experiment drivers in ``results/`` check the
tree without importing torch. ``launch/train.py`` stamps ``code_version()`` into every config.json and
``benchmarks.provenance`` into every score file.

    from runfolder.code_version import code_version, require_clean_tree
    require_clean_tree(args.allow_dirty)     # a driver, before it trains anything
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from runfolder.errors import fail

REPO_ROOT = Path(__file__).resolve().parents[1]
# git status/diff of a checkout with thousands of committed run files takes well under a second; 10 s
# leaves room for a cold network filesystem on a cluster's login node
GIT_TIMEOUT_S = 10


def _git(*argv: str) -> bytes:
    return subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, timeout=GIT_TIMEOUT_S,
                          check=True).stdout


# What the drivers write into a committed results folder (run records, timings, reports, figures) is
# output, not code: a resumed driver rewrites timings.json after each run and must not then refuse its
# own next run or stamp it -dirty. Code and specs under results/ (.py, .yaml, .toml, .csv) still count.
ARTIFACT_SUFFIXES = (".json", ".jsonl", ".md", ".html", ".png", ".svg", ".pdf", ".txt", ".log")


def is_run_artifact(path: str) -> bool:
    """A file under results/ that a driver writes (see ARTIFACT_SUFFIXES), as git names it."""
    return path.startswith("results/") and path.endswith(ARTIFACT_SUFFIXES)


def tree_changes() -> list[str] | None:
    """Tracked files other than run artifacts that differ from HEAD (``git status --porcelain
    --untracked-files=no``), in git's order; None outside a git checkout (an sdist install)."""
    try:
        status = _git("status", "--porcelain", "--untracked-files=no").decode()
    except (OSError, subprocess.SubprocessError):
        return None
    # a rename reads "old -> new": both names count
    paths = [name for line in status.splitlines() if line.strip() for name in line[3:].split(" -> ")]
    return [path for path in dict.fromkeys(paths) if not is_run_artifact(path)]


def git_commit() -> str | None:
    """Commit of this code, with ``-dirty`` when the work tree has changes; None outside a git checkout."""
    changes = tree_changes()
    try:
        commit = _git("rev-parse", "HEAD").decode().strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if changes else "")


def git_diff_sha256() -> str | None:
    """sha256 of ``git diff HEAD --binary`` over the changed files other than run artifacts: the patch a
    ``-dirty`` run was trained with, so the run can be matched to it; None on a clean tree or outside a
    git checkout."""
    changes = tree_changes()
    if not changes:
        return None
    try:
        return hashlib.sha256(_git("diff", "HEAD", "--binary", "--", *changes)).hexdigest()
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> dict[str, str | None]:
    """The code a run was trained with, as its config.json records it: commit and the dirty diff's hash."""
    return {"git_commit": git_commit(), "git_diff_sha256": git_diff_sha256()}


ALLOW_DIRTY_HELP = ("train from a work tree whose tracked files have uncommitted changes (run artifacts "
                    "under results/ do not count); each run's config.json then records git_diff_sha256, "
                    "the sha256 of `git diff HEAD --binary` over the changed files")
_said: set[str] = set()  # notes said once a process: a driver calls another driver once per arm


def _note_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(f"note: {message}", file=sys.stderr, flush=True)


def require_clean_tree(allow_dirty: bool) -> None:
    """A training driver's guard: exit 2 naming the changed files when the tree is dirty and
    ``--allow-dirty`` was not given, so committed results come from commits in the history."""
    changes = tree_changes()
    if changes is None:
        _note_once(f"{REPO_ROOT} is not a git checkout: runs record no commit")
        return
    if not changes:
        return
    shown = ", ".join(changes[:3]) + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")
    if not allow_dirty:
        fail(f"the work tree has uncommitted changes to tracked files ({shown}); commit them, or pass "
             "--allow-dirty to train anyway (each run then records the diff's sha256)")
    _note_once(f"training from a dirty tree ({shown}): each run's config.json records git_diff_sha256")
