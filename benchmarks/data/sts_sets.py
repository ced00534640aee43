"""The STS test sets as MTEB uses them: local TSVs (`<data>/sts/<set>.tsv`, split on tab: unquoted) or,
online, MTEB's own HF datasets at the revisions mteb pins. `auto` (the runners' default) reads the
local copies where they are (`--data DIR`, $MIXCLIP_SHARED_DATA or <repo>/../shared/data) and MTEB's
datasets elsewhere, so a fresh clone with network access scores STS with no data of its own.

    pairs = load_sts_set("STSBenchmark")             # StsPairs(name, sentence1, sentence2, scores)
    source, data = resolve_sts_source("auto", None)  # ("local", shared dir) or ("hf", None)
    pairs = read_sts_tsv("my_pairs.tsv", "mine")     # sentence1<TAB>sentence2<TAB>score, one header line
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data.files import InputError, shared_data_dir

# MTEB task name -> local file under <shared data>/sts/
STS_FILES = {
    "STS12": "sts12.tsv", "STS13": "sts13.tsv", "STS14": "sts14.tsv", "STS15": "sts15.tsv",
    "STS16": "sts16.tsv", "STSBenchmark": "stsb.tsv", "SICK-R": "sickr.tsv",
}
HEADER = ["sentence1", "sentence2", "score"]
STS_SOURCES = ("auto", "local", "hf")


@dataclass(frozen=True)
class StsPairs:
    name: str
    sentence1: list[str]
    sentence2: list[str]
    scores: np.ndarray  # gold scores as in the source (0-5, SICK-R 1-5); rescaling cannot move Spearman

    def __len__(self) -> int:
        return len(self.scores)

    def head(self, limit: int | None) -> StsPairs:
        if limit is None or limit >= len(self):
            return self
        return StsPairs(self.name, self.sentence1[:limit], self.sentence2[:limit], self.scores[:limit])


def read_sts_tsv(path: str | Path, name: str | None = None) -> StsPairs:
    """Read ``sentence1<TAB>sentence2<TAB>score`` with one header line; no quoting, spaces kept."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"STS file {path} not found; expected <data>/sts/<set>.tsv with columns "
                         f"{'<TAB>'.join(HEADER)}")
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0].split("\t") != HEADER:
        raise InputError(f"{path}: header must be {'<TAB>'.join(HEADER)}")
    sentence1, sentence2, scores = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3:
            raise InputError(f"{path}:{number}: expected 3 tab-separated fields, got {len(fields)}")
        sentence1.append(fields[0])
        sentence2.append(fields[1])
        scores.append(float(fields[2]))
    return StsPairs(name or path.stem, sentence1, sentence2, np.asarray(scores, dtype=np.float64))


def resolve_sts_source(source: str, data_dir: str | Path | None) -> tuple[str, Path | None]:
    """(``local``, folder) or (``hf``, None) for ``--source``: ``auto`` is local when ``--data`` is
    given or the shared data folder has ``sts/``, MTEB's HF datasets otherwise."""
    if source not in STS_SOURCES:
        raise InputError(f"--source {source}: expected one of {', '.join(STS_SOURCES)}")
    if source == "hf":
        return "hf", None
    if data_dir is not None:
        return "local", Path(data_dir)
    if source == "local" or (shared_data_dir() / "sts").is_dir():
        return "local", shared_data_dir()
    return "hf", None


def load_sts_set(name: str, source: str = "auto", data_dir: str | Path | None = None) -> StsPairs:
    """One MTEB STS test set, from local TSVs (``source="local"``), MTEB's HF dataset ("hf"), or
    whichever of the two is there ("auto", see ``resolve_sts_source``)."""
    if name not in STS_FILES:
        raise InputError(f"unknown STS set {name!r}: expected one of {', '.join(STS_FILES)}")
    source, data_dir = resolve_sts_source(source, data_dir)
    if source == "hf":
        return _load_from_hub(name)
    data_dir = Path(data_dir) if data_dir is not None else shared_data_dir()
    if not (data_dir / "sts").is_dir():
        raise InputError(f"--data {data_dir}: no sts/ folder; expected {data_dir}/sts/"
                         f"{{{','.join(STS_FILES.values())}}} (sentence1<TAB>sentence2<TAB>score)")
    return read_sts_tsv(data_dir / "sts" / STS_FILES[name], name)


def _load_from_hub(name: str) -> StsPairs:
    """MTEB's own copy at the revision mteb pins (needs the network or a warm HF cache)."""
    import datasets
    import mteb

    spec = mteb.get_task(name).metadata.dataset
    try:
        split = datasets.load_dataset(spec["path"], revision=spec["revision"], split="test")
    except Exception as exc:  # noqa: BLE001 - offline, missing cache...: report one line
        raise InputError(f"MTEB's {spec['path']}@{spec['revision'][:8]} cannot be loaded "
                         f"({type(exc).__name__}: no network or HF cache?); give local copies with "
                         "--source local --data DIR (DIR/sts/<set>.tsv, docs/data.md)") from None
    return StsPairs(name, list(split["sentence1"]), list(split["sentence2"]),
                    np.asarray(split["score"], dtype=np.float64))
