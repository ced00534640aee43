"""Saving and loading our checkpoints, and one clear error for a checkpoint of another model."""

from __future__ import annotations

import pytest
import torch

import towers


def _save(model, path):
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict(), "step": 3}, path)


@pytest.mark.parametrize("name", ["mixer-tiny", "transformer+mixer-tiny"])
def test_round_trip_gives_identical_embeddings(name, tmp_path):
    torch.manual_seed(0)
    model = towers.create_model(name, text_overrides={"token_mixing": "full"} if "mixer" in name else None)
    _save(model, tmp_path / "ckpt.pt")
    loaded, preprocess = towers.load(tmp_path / "ckpt.pt")
    assert loaded.model_name == name and loaded.model_config == model.model_config
    tokens = towers.tokenize(["a red circle", "blue"])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), model.eval().encode_text(tokens))
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
    assert preprocess.transforms[0].size == 64


def test_checkpoint_of_another_tower_names_model_and_keys(tmp_path):
    mixer = towers.create_model("mixer-tiny")
    transformer = towers.create_model("transformer-tiny")
    path = tmp_path / "lying.pt"
    torch.save({"model_config": transformer.model_config, "state_dict": mixer.state_dict()}, path)
    with pytest.raises(towers.CheckpointError) as error:
        towers.load(path)
    message = str(error.value)
    assert "\n" not in message
    assert "'transformer-tiny'" in message and "missing keys: visual.class_embedding" in message
    assert "unexpected keys: visual.stem.proj.weight" in message and "more)" in message


def test_shape_mismatch_is_reported():
    small = towers.create_model("mixer-tiny")
    other = towers.create_model("mixer-tiny", embed_dim=64)
    expected = r"shape mismatch .*image_projection \(128, 128\) vs \(128, 64\)"
    with pytest.raises(towers.CheckpointError, match=expected):
        towers.load_weights(other, small.state_dict(), "small.pt")


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(towers.CheckpointError, match=r"junk.pt: not a readable torch checkpoint"):
        towers.load(junk)
    with pytest.raises(towers.CheckpointError,
                       match=r"absent.pt. is neither a run folder, a checkpoint file, a model name"):
        towers.load(tmp_path / "absent.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(towers.CheckpointError, match=r"neither a mixclip checkpoint"):
        towers.load(tmp_path / "other.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    path = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(towers.CheckpointError, match="not a readable torch checkpoint"):
        towers.load(path)  # weights_only=True: never unpickles arbitrary objects


def test_name_loads_a_random_model():
    model, preprocess = towers.load("transformer-tiny")
    assert not model.training and model.model_name == "transformer-tiny"


# --- launch.checkpointing: the requeue mode's reader, pruning, and the `latest` pointer -----------------

def _step_files(folder):
    return sorted(p.name for p in folder.glob("step_*.pt"))


def test_newest_readable_falls_back_past_a_truncated_file_and_a_bad_pointer(tmp_path):
    from launch.checkpointing import newest_readable, save_checkpoint

    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step, "weights": torch.full((64,), float(step))})
    reports = []
    path, state = newest_readable(tmp_path, reports.append)
    assert (path.name, state["step"], reports) == ("step_00000003.pt", 3, [])

    data = (tmp_path / "step_00000003.pt").read_bytes()
    (tmp_path / "step_00000003.pt").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    path, state = newest_readable(tmp_path, reports.append)
    assert state["step"] == 2 and torch.equal(state["weights"], torch.full((64,), 2.0))
    assert len(reports) == 1 and "step_00000003.pt: not a readable torch checkpoint" in reports[0]
    assert "\n" not in reports[0]

    reports.clear()
    (tmp_path / "latest").write_text("step_00000009.pt\n")  # names a file that is not there
    path, state = newest_readable(tmp_path, reports.append)
    assert state["step"] == 2 and len(reports) == 2 and "names 'step_00000009.pt'" in reports[0]

    for name in _step_files(tmp_path):
        (tmp_path / name).write_bytes(b"junk")
    assert newest_readable(tmp_path, reports.append) is None


def test_nothing_latest_names_is_overwritten_and_pruning_keeps_the_newest(tmp_path):
    from launch.checkpointing import point_latest, prune_checkpoints, save_checkpoint

    for step in range(1, 6):
        path = save_checkpoint(tmp_path, step, {"step": step})
        prune_checkpoints(tmp_path, 2, path)
    assert _step_files(tmp_path) == ["step_00000004.pt", "step_00000005.pt"]
    with pytest.raises(FileExistsError, match="'latest' names it"):
        save_checkpoint(tmp_path, 5, {"step": 5})
    # A run that fell back to step 4 (5 unreadable) points latest at 4, trains on, and replaces 5.
    point_latest(tmp_path, tmp_path / "step_00000004.pt")
    save_checkpoint(tmp_path, 5, {"step": 55})
    assert torch.load(tmp_path / "step_00000005.pt", weights_only=True)["step"] == 55
    # files of steps beyond the current one are not pruned (the run will replace them)
    save_checkpoint(tmp_path, 9, {"step": 9})
    point_latest(tmp_path, tmp_path / "step_00000004.pt")
    prune_checkpoints(tmp_path, 1, tmp_path / "step_00000004.pt")
    assert _step_files(tmp_path) == ["step_00000004.pt", "step_00000005.pt", "step_00000009.pt"]
    for step in (10, 11, 12):  # 0 keeps all
        prune_checkpoints(tmp_path, 0, save_checkpoint(tmp_path, step, {"step": step}))
    assert len(_step_files(tmp_path)) == 6


# --- launch.checkpointing: rank 0's background writer, and each process's own RNG ----------------------

def test_the_writer_returns_once_the_copy_is_made_and_writes_that_copy_in_the_background(tmp_path,
                                                                                         monkeypatch):
    from launch.checkpointing import WRITING, CheckpointWriter

    release, original = __import__("threading").Event(), torch.save

    def slow_disk(payload, f, *args, **kwargs):
        assert release.wait(30), "the test never released the write"
        return original(payload, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", slow_disk)
    live = torch.zeros(1000)
    writer = CheckpointWriter(tmp_path, keep=2)
    writer.start(1, {"step": 1, "weights": live})  # returns while the disk is still busy
    live += 7  # the next training step changes the live tensor; the checkpoint holds the copy
    assert writer.outcome(wait=False) == WRITING and not (tmp_path / "step_00000001.pt").exists()
    with pytest.raises(RuntimeError, match="previous write was not collected"):
        writer.start(2, {"step": 2})
    release.set()
    assert writer.outcome(wait=True) is None and writer.outcome(wait=True) is None
    saved = torch.load(tmp_path / "step_00000001.pt", weights_only=True)
    assert torch.equal(saved["weights"], torch.zeros(1000))
    assert (tmp_path / "latest").read_text().strip() == "step_00000001.pt"
    for step in (2, 3):  # pruning to the newest two happens after each write
        writer.start(step, {"step": step})
        assert writer.outcome(wait=True) is None
    assert _step_files(tmp_path) == ["step_00000002.pt", "step_00000003.pt"]


def test_a_zip_writer_error_of_a_full_disk_comes_back_as_one_line_naming_the_disk(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as a RuntimeError raised while handling the OSError."""
    import errno

    from launch.checkpointing import CheckpointWriter

    def full_disk(payload, f, *args, **kwargs):
        f.write(b"\0" * 4096)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            # raised while handling it, as torch does: the OSError is only its __context__
            raise RuntimeError(  # noqa: B904
                "[enforce fail at inline_container.cc:672] . unexpected pos 25656000 vs 25655892\n"
                "frame #0: c10::ThrowEnforceNotMet")

    writer = CheckpointWriter(tmp_path, keep=3)
    writer.start(1, {"step": 1})
    assert writer.outcome(wait=True) is None
    monkeypatch.setattr(torch, "save", full_disk)
    writer.start(2, {"step": 2})
    line = writer.outcome(wait=True)
    assert line == "checkpoint of step 2 not written (OSError: [Errno 28] No space left on device)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001.pt"]  # no temp file left
    assert (tmp_path / "latest").read_text().strip() == "step_00000001.pt"


class _FakeCuda:
    """8 visible GPUs, this process on `current`; records which devices' generators are read or set."""

    def __init__(self, current):
        self.current, self.touched = current, []

    def is_available(self):
        return True

    def current_device(self):
        return self.current

    def get_rng_state(self, device="cuda"):
        self.touched.append(("get", device))
        return torch.full((16,), device, dtype=torch.uint8)

    def get_rng_state_all(self):
        self.touched.append(("get", "all"))
        return [torch.full((16,), d, dtype=torch.uint8) for d in range(8)]

    def set_rng_state(self, state, device="cuda"):
        self.touched.append(("set", device, int(state[0])))

    def set_rng_state_all(self, states):
        self.touched.append(("set", "all"))


def test_each_process_saves_and_restores_only_its_own_gpus_rng(monkeypatch):
    from launch.checkpointing import capture_rng_state, restore_rng_state

    cuda = _FakeCuda(current=5)
    monkeypatch.setattr(torch, "cuda", cuda)
    state = capture_rng_state()
    assert cuda.touched == [("get", 5)]
    assert torch.equal(state["cuda"], torch.full((16,), 5, dtype=torch.uint8))
    cuda.touched.clear()
    restore_rng_state(state)
    assert cuda.touched == [("set", 5, 5)]
    cuda.touched.clear()  # a checkpoint of the older format holds every visible GPU's state: take our own
    restore_rng_state(dict(state, cuda=[torch.full((16,), d, dtype=torch.uint8) for d in range(8)]))
    assert cuda.touched == [("set", 5, 5)]


def test_every_process_resumes_from_the_checkpoint_process_0_chose(tmp_path, monkeypatch):
    """Two processes simulated in turn: process 1's read of the newest checkpoint fails (a transient
    error of a shared filesystem). It must not fall back to an older step on its own: either every
    process resumes from process 0's choice or the run ends in one line naming process 1."""
    from types import SimpleNamespace

    from launch import run_resume
    from launch.checkpointing import save_checkpoint
    from runfolder import RunFolder

    folder = RunFolder(tmp_path / "run")
    for step in (2, 4):
        save_checkpoint(folder.checkpoints, step, {"step": step, "state_dict": {}})
    sent, real_read = [], towers.read_checkpoint

    def Process(rank):  # noqa: N802 - the process `rank`'s resume component
        accelerator = SimpleNamespace(process_index=rank, is_main_process=rank == 0,
                                      wait_for_everyone=lambda: None)
        return run_resume.RunResume(SimpleNamespace(resume="auto"), None, None, folder, None, accelerator)

    def read(path, mmap=False):
        if rank == 1 and "step_00000004" in str(path):
            raise towers.CheckpointError(f"checkpoint {path}: not a readable torch checkpoint (stale handle)")
        return real_read(path, mmap=mmap)

    def broadcast(values, from_process=0):
        if rank == 0:
            sent.append(list(values))
            return values
        return list(sent[-1])

    monkeypatch.setattr(towers, "read_checkpoint", read)
    monkeypatch.setattr(towers, "load_weights", lambda *args: None)
    monkeypatch.setattr(run_resume.RunResume, "_check_resumable", lambda *args, **kwargs: None)
    monkeypatch.setattr(run_resume, "broadcast_object_list", broadcast)
    monkeypatch.setattr(run_resume, "gather_object", lambda values: values)  # each sees its own failure
    rank = 0
    assert Process(0)._resume_state()["step"] == 4
    rank = 1
    with pytest.raises(run_resume.RunError) as error:
        Process(1)._resume_state()
    assert "process 0 chose, step_00000004.pt; process 1: checkpoint" in str(error.value)
    assert "stale handle" in str(error.value) and "\n" not in str(error.value)
