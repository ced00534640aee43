"""Shard specs: the shard URLs a data spec names (part of `benchmarks.data.shards`' API, which
re-exports it; see its docstring).

    expand_shards("shards/{00000..41407}.tar") -> ["shards/00000.tar", ...]

A spec is a brace pattern, several specs joined by "::", a directory (its *.tar files, sorted), a
glob, or a list of those. Each parent folder of the expanded names is listed once (`_FolderListing`):
at LAION's 41,408 names a rank's startup costs two directory reads, not 82,816 `stat` calls on a
shared filesystem (tests/test_data_shards.py counts them).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import braceexpand

from runfolder.errors import InputError

SPEC_HELP = "a brace pattern like shards/{00000..00099}.tar, a '::'-joined list, or a directory of .tar files"


class ShardSpecError(InputError):
    """No shard file matches a data spec; the message is one line naming the spec."""


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


class _FolderListing:
    """What each parent folder of a spec's names holds, listed once (one `scandir` per folder): LAION's
    41,408 shard names cost one directory read instead of 41,408 `stat`s on a shared filesystem, and
    again for every rank of the job."""

    def __init__(self) -> None:
        self._folders: dict[str, dict[str, str]] = {}  # folder -> {entry name: "dir", "file" or "other"}

    def _entries(self, folder: str) -> dict[str, str]:
        if folder not in self._folders:
            try:  # DirEntry's is_dir/is_file follow links (like os.path's) and need no stat for others
                with os.scandir(folder) as entries:
                    self._folders[folder] = {
                        entry.name: "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
                        for entry in entries}
            except OSError:  # missing or unreadable folder: its names count as missing shards
                self._folders[folder] = {}
        return self._folders[folder]

    def kind(self, path: str) -> str | None:
        """"dir", "file", "other" (a broken link, a device ...) or None for a name not there."""
        folder, name = os.path.split(path)
        if not name:  # "shards/": the folder itself
            return "dir" if os.path.isdir(path) else None
        return self._entries(folder or os.curdir).get(name)


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard URLs of a data spec (see the module docstring)."""
    parts = spec.split("::") if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    listing = _FolderListing()
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if _is_remote(part):
            urls.extend(braceexpand.braceexpand(part))
            continue
        for item in braceexpand.braceexpand(os.path.expanduser(os.path.expandvars(part))):
            if listing.kind(item) == "dir":
                urls.extend(sorted(glob.glob(os.path.join(glob.escape(item), "*.tar"))))
            elif any(c in item for c in "*?["):
                urls.extend(sorted(glob.glob(item)))
            else:
                urls.append(item)  # kept even if missing: reading counts it as missing_shard
    if not any(_is_remote(u) or listing.kind(u) == "file" for u in urls):
        shown = spec if isinstance(spec, str) else "::".join(spec)
        raise ShardSpecError(f"no shard file matches {shown!r} (expected {SPEC_HELP})")
    return urls
