"""`python -m towers.export`: a Transformer run becomes open_clip model files with our embeddings; a
run with a Mixer tower is refused for open_clip in one line and written in our form, which towers.load
reads back."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from PIL import Image

import towers
from towers import export

TEXTS = ["a photo of a dog.", "a small red circle beside a large blue square on grass", "x"]


def _run(tmp_path, name: str, model: towers.CLIP):
    """A run dir as launch/train.py leaves it: checkpoints/step_*.pt and the latest pointer."""
    checkpoints = tmp_path / name / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict(), "step": 7,
                "recipe_sha256": "ab" * 32, "optimizer": {}}, checkpoints / "step_00000007.pt")
    (checkpoints / "latest").write_text("step_00000007.pt\n")
    return tmp_path / name


def _perturbed(model: towers.CLIP) -> towers.CLIP:
    """Non-default norms and temperature, so a weight left at its init by the export would show."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "ln" in name or "norm" in name or name == "logit_scale":
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize("context_length, quick_gelu", [(32, False), (77, True)])
def test_transformer_run_loads_in_open_clip_with_our_embeddings(tmp_path, capsys, context_length, quick_gelu):
    torch.manual_seed(0)
    ours = _perturbed(towers.create_model("transformer-tiny", quick_gelu=quick_gelu,
                                          text_overrides={"context_length": context_length}))
    run = _run(tmp_path, "transformer-seed0", ours)
    assert export.main([str(run), "--to", str(tmp_path / "out")]) == 0
    assert "local-dir:" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [export.OPEN_CLIP_CONFIG,
                                                                    export.OPEN_CLIP_WEIGHTS]
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'out'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'out'}")
    theirs.eval()
    assert type(theirs) is open_clip.CLIP and theirs.context_length == context_length
    image = Image.fromarray((torch.rand(80, 96, 3) * 255).byte().numpy())
    pixels = preprocess(image)[None]
    assert torch.equal(pixels, towers.image_transform(64, train=False)(image)[None])
    tokens = tokenizer(TEXTS)
    assert torch.equal(tokens, towers.tokenize(TEXTS, context_length))
    images = torch.cat([pixels, torch.randn(3, 3, 64, 64)])
    with torch.no_grad():
        # the same computation, bit for bit: full context, unnormalised
        assert torch.equal(theirs.encode_image(images), ours.encode_image(images))
        assert torch.equal(theirs.encode_text(tokens), ours.encode_text(tokens, stop_at_eot=False))
        # what the benchmarks use: normalised, our text tower stopping at the batch's longest EOT
        text_diff = (theirs.encode_text(tokens, normalize=True) - ours.encode_text(tokens, normalize=True))
        assert text_diff.abs().max().item() <= 1e-6
        assert torch.equal(theirs.logit_scale, ours.logit_scale)
    config = json.loads((tmp_path / "out" / export.OPEN_CLIP_CONFIG).read_text())
    assert config["model_cfg"]["quick_gelu"] is quick_gelu and config["mixclip"]["step"] == 7
    back, _ = towers.load(tmp_path / "out")  # our loader reads the open_clip form too
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ours.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("name, towers_named", [("mixer-tiny", "image tower and text tower"),
                                                ("transformer+mixer-tiny", "Mixer text tower")])
def test_mixer_run_is_refused_for_open_clip_and_written_for_towers_load(tmp_path, capsys, name, towers_named):
    torch.manual_seed(1)
    ours = _perturbed(towers.create_model(name))
    run = _run(tmp_path, name, ours)
    assert export.main([str(run), "--to", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "open_clip cannot hold the Mixer" in err and towers_named in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [export.OUR_CONFIG, export.OUR_WEIGHTS]
    back, _ = towers.load(tmp_path / "out")
    assert back.model_name == name and back.model_config == ours.model_config
    images, tokens = torch.randn(2, 3, 64, 64), towers.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.equal(back.encode_image(images), ours.encode_image(images))
        assert torch.equal(back.encode_text(tokens), ours.encode_text(tokens))


def test_a_caption_masked_text_tower_is_refused_for_open_clip():
    config = towers.create_model("transformer-tiny").model_config
    assert export.open_clip_refusal(config) is None
    for key in ("text_mask", "mask"):  # whatever the option is called, where a run has one
        refusal = export.open_clip_refusal({**config, "text_overrides": {key: "caption"}})
        assert f"text_overrides.{key}='caption'" in refusal and "always causal" in refusal
    assert export.open_clip_refusal({**config, "text_overrides": {"text_mask": "causal"}}) is None


def test_ours_for_a_transformer_run_and_bad_input(tmp_path, capsys):
    run = _run(tmp_path, "t", towers.create_model("transformer-tiny"))
    assert export.main([str(run / "checkpoints" / "step_00000007.pt"), "--to", str(tmp_path / "o"),
                        "--ours"]) == 0
    assert (tmp_path / "o" / export.OUR_WEIGHTS).is_file() and towers.load(tmp_path / "o")[0]
    assert export.main([str(tmp_path / "nothing"), "--to", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing: no such run dir or checkpoint file" in err
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert export.main([str(tmp_path / "empty"), "--to", str(tmp_path / "x")]) == 2
    assert "checkpoints/latest" in capsys.readouterr().err
