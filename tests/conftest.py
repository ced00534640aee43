"""Shared test fixtures: the shared evaluation data folder and a private cache folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
# pytest-xdist runs one worker per core (pyproject's addopts): each worker and the benchmarks it starts
# get their share of the cores, because OpenMP threads that outnumber the cores spin against each other
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = os.environ["MIXCLIP_CPU_THREADS"] = str(max(1, _CORES // _WORKERS))
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MIXCLIP_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared evaluation data not found at {SHARED_DATA} (set MIXCLIP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def session_tmpdir(tmp_path_factory):
    """The temp files of the tests and of every process they start (multiprocessing's pymp-*, the
    launcher's torchelastic_*, wandb's, inductor's cache) go under pytest's base folder, which is deleted
    when the session passes, instead of piling up in the machine's /tmp run after run."""
    tmp = tmp_path_factory.getbasetemp() / "tmp"
    tmp.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:  # undone at the session's end
        patch.setenv("TMPDIR", str(tmp))
        patch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its first answer
        yield tmp


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets the same session-wide cache dir, never the user's ~/.cache/mixclip. Under
    pytest-xdist the workers share it (their base folders' parent), so the default toy set is generated
    once per session, not once per worker (benchmarks.data.toy locks and renames into place)."""
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "mixclip-cache"
    monkeypatch.setenv("MIXCLIP_CACHE", str(cache))
    return cache


def pytest_configure(config):
    if _WORKERS > 1:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_unconfigure(config):
    """The session's end: the final collection of the interpreter is skipped, as runfolder.errors.run_main
    does for every entry point the tests start (1.3-1.4 s of CPU per process)."""
    import gc

    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: they run where torch sees a GPU and are skipped elsewhere.
    Collection order: slow tests first made the suite slower (docs/journal.md, the test suite's time)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu); torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_accelerator():
    """Accelerate's state is one per process: every test starts and ends with none, so a test that
    builds its own Accelerator (another precision, cpu=True) and an in-process train.main run (whose
    precision is the machine's) work in any order, in any worker."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
