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
    with pytest.raises(towers.CheckpointError, match=r"neither a checkpoint file nor a model name"):
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
