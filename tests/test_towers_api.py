"""The Python API a user of open_clip expects: `towers.load` takes what `--model` takes, a tokenizer
bound to the model's context, `create_model_and_transforms`, and `register_family` without editing the
registry (one family's variants never hide another's)."""

from __future__ import annotations

import types

import open_clip
import pytest
import torch

import towers
from runfolder import point_latest
from towers import mixer


def _save_run(folder, model, step=3):
    checkpoint = folder / "checkpoints" / f"step_{step:08d}.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict(), "step": step},
               checkpoint)
    point_latest(checkpoint.parent, checkpoint)
    return checkpoint


def test_load_takes_a_run_folder_like_every_runner(tmp_path):
    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny")
    checkpoint = _save_run(tmp_path / "run", model)
    from_run, preprocess = towers.load(tmp_path / "run")
    from_file, _ = towers.load(checkpoint)
    tokens = towers.tokenize(["a red circle", "two blue squares"])
    torch.testing.assert_close(from_run.encode_text(tokens), from_file.encode_text(tokens), rtol=0, atol=0)
    torch.testing.assert_close(from_run.encode_text(tokens), model.eval().encode_text(tokens), rtol=0, atol=0)
    with pytest.raises(towers.CheckpointError, match="checkpoints/latest"):
        towers.load(tmp_path)  # a folder that is neither a run nor an export


def test_load_takes_an_open_clip_name_and_a_local_pretrained_file(tmp_path):
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-S-32").eval()
    weights = tmp_path / "vit-s-32.pt"
    torch.save(reference.state_dict(), weights)
    model, preprocess = towers.load("ViT-S-32", pretrained=str(weights))
    assert isinstance(model, towers.CLIP) and model.model_name == "transformer-S-32"
    texts = ["a red circle", "a photo of a dog"]
    image = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(towers.get_tokenizer(model)(texts)),
                                   reference.encode_text(open_clip.get_tokenizer("ViT-S-32")(texts)),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(model.encode_image(image), reference.encode_image(image),
                                   rtol=0, atol=1e-5)
    with pytest.raises(towers.CheckpointError, match="pretrained"):
        towers.load("mixer-tiny", pretrained=str(weights))


def test_tokenizer_follows_the_models_context_length():
    for family in ("mixer", "transformer"):
        model = towers.create_model(f"{family}-tiny", text_overrides={"context_length": 32}).train()
        with pytest.raises((ValueError, RuntimeError)):  # towers.tokenize alone gives 77 positions
            model.encode_text(towers.tokenize(["a red circle"]))
        tokenizer = towers.get_tokenizer(model)
        tokens = tokenizer(["a red circle", "word " * 60])
        assert tokens.shape == (2, 32) and tokenizer.context_length == 32
        assert tokens[1, -1] == tokens.max()  # an over-long text keeps EOT last, as open_clip truncates
        assert model.encode_text(tokens).shape == (2, model.embed_dim)
    assert towers.get_tokenizer("mixer-B-32").context_length == 77


def test_create_model_and_transforms_returns_train_and_eval_transforms(tmp_path):
    from PIL import Image
    from torchvision import transforms

    model, train, val = towers.create_model_and_transforms("mixer-tiny")
    assert not model.training
    assert any(isinstance(step, transforms.RandomResizedCrop) for step in train.transforms)
    assert not any(isinstance(step, transforms.RandomResizedCrop) for step in val.transforms)
    image = Image.new("RGB", (97, 61), (200, 10, 10))
    assert train(image).shape == val(image).shape == (3, model.image_size, model.image_size)


@pytest.fixture
def small_family():
    """A family with only the `tiny` variant (the Mixer's towers), registered without editing registry.py."""
    family = types.SimpleNamespace(VARIANTS={"tiny": mixer.VARIANTS["w128"]}, build=mixer.build,
                                   text_mask_overrides=mixer.text_mask_overrides)
    towers.register_family("smallmix", family)
    yield family
    towers.unregister_family("smallmix")


def test_register_family_adds_models_and_hides_no_other_variant(small_family):
    names = towers.available_models()
    assert {"smallmix-tiny", "smallmix+transformer-tiny", "transformer+smallmix-tiny"} <= set(names)
    assert {"mixer-B-32", "transformer-B-32", "transformer+mixer-B-16"} <= set(names)  # built-ins intact
    assert not any(name.startswith("smallmix") and not name.endswith("-tiny") for name in names)
    model = towers.create_model("smallmix+transformer-tiny")
    assert model.model_config["image_family"] == "smallmix"
    with pytest.raises(ValueError, match="unknown model 'smallmix-B-32'"):
        towers.create_model("smallmix-B-32")


@pytest.mark.parametrize("name, family, match", [
    ("mixer", types.SimpleNamespace(VARIANTS=mixer.VARIANTS, build=mixer.build,
                                    text_mask_overrides=mixer.text_mask_overrides),
     "already registered"),
    ("a-b", mixer, "no '-'"),
    ("nobuild", types.SimpleNamespace(VARIANTS={"tiny": {}}), "lacks build, text_mask_overrides"),
])
def test_register_family_refuses_what_would_break_names(name, family, match):
    with pytest.raises(ValueError, match=match):
        towers.register_family(name, family)
