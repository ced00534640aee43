"""Where the suite's data lives, how a file is identified, and the one-line error for bad input.

    shared_data_dir()    the shared evaluation data: $MIXCLIP_SHARED_DATA or <repo>/../shared/data
    cache_dir()          generated and derived data (toy set, zero-shot classifiers): $MIXCLIP_CACHE
                         or ~/.cache/mixclip
    file_sha256(path)    sha256 of a file's bytes (cached=True memoises per path, mtime and size)
    InputError           bad input a user can fix; its message is one line naming the file or flag
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from runfolder.errors import InputError  # noqa: F401 - re-exported: the data sets raise it

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    env = os.environ.get("MIXCLIP_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    env = os.environ.get("MIXCLIP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mixclip"


_MEMO: dict[tuple[str, float, int], str] = {}


def file_sha256(path: str | os.PathLike, *, cached: bool = False) -> str:
    """Hex sha256 of a file. `cached` is for large files hashed repeatedly (checkpoints); integrity
    checks pass cached=False so that a file damaged in place is always seen."""
    path = Path(path).resolve()
    key = None
    if cached:
        stat = path.stat()
        key = (str(path), stat.st_mtime, stat.st_size)
        if key in _MEMO:
            return _MEMO[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    if key is not None:
        _MEMO[key] = digest.hexdigest()
    return digest.hexdigest()
