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
