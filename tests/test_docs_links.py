"""Every relative link in the README and docs/ reaches a file of the repository, and every `#anchor` a
heading of its target page (GitHub's heading ids), so moving a section cannot leave a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def heading_ids(page: Path) -> set[str]:
    """GitHub's ids: lower case, punctuation other than `-` and `_` dropped, spaces to `-`, repeats
    numbered -1, -2, ..."""
    ids, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        base = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_heading_ids_follow_github():
    page = REPO / "docs" / "usage.md"
    ids = heading_ids(page)
    assert {"install-and-test", "runner-flags", "how-the-report-decides"} <= ids
    assert "adding-a-tower-family" in ids and "Adding a tower family" not in ids


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_reaches_its_file_and_heading(page):
    dead = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            dead.append(f"{target}: no file {file.relative_to(REPO) if REPO in file.parents else file}")
        elif anchor and file.suffix == ".md" and anchor not in heading_ids(file):
            dead.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not dead, f"{page.relative_to(REPO)}: " + "; ".join(dead)


def test_every_docs_page_the_code_names_exists_with_its_heading():
    """Comments and messages point readers at `docs/<page>.md[#anchor]`; each must still be there."""
    dead = []
    for source in sorted(p for folder in ("towers", "launch", "benchmarks", "results", "runfolder", "tests")
                         for p in (REPO / folder).rglob("*.py")):
        text = source.read_text().replace("open_clip docs/", "")  # open_clip's own docs, not ours
        for path, anchor in re.findall(r"\b(docs/[\w/.-]+?\.md)(?:#([\w-]+))?", text):
            page = REPO / path
            if not page.exists():
                dead.append(f"{source.relative_to(REPO)}: {path}")
            elif anchor and anchor not in heading_ids(page):
                dead.append(f"{source.relative_to(REPO)}: {path}#{anchor}")
    assert not dead, "; ".join(dead)
