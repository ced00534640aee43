"""Every registered tower family x variant: builds, trains a step, counts, and bad names."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import towers
from towers.registry import FAMILIES, MODALITIES, all_variants

TINY_MODELS = [name for name in towers.available_models() if name.endswith("-tiny")]


def test_every_family_pair_is_registered_at_every_variant():
    assert set(all_variants()) >= {"tiny", "S/32", "B/32", "B/16"}
    assert len(towers.available_models()) == len(FAMILIES) ** 2 * len(all_variants())
    assert {"transformer-B-32", "mixer-B-32", "transformer+mixer-tiny"} <= set(towers.available_models())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("modality", MODALITIES)
def test_tiny_tower_pools_to_its_width(family, modality):
    tower = towers.build_tower(family, modality, "tiny")
    inputs = torch.randn(3, 3, 64, 64) if modality == "image" else towers.tokenize(["a", "b c", "d e f"])
    out = tower(inputs)
    assert out.shape == (3, tower.width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_model_forward_backward(name):
    torch.manual_seed(0)
    model = towers.create_model(name)
    with torch.no_grad():  # a zero-init gain (a ResNet block's last BatchNorm) shuts its branch at init
        for parameter in model.parameters():  # by design; this test checks the wiring, not the init
            if not parameter.any():
                parameter.fill_(0.5)
    images = torch.randn(4, 3, model.image_size, model.image_size)
    tokens = towers.tokenize(["a red circle", "a blue square", "two green stars", "x"])
    image_features, text_features, scale = model(images, tokens)
    assert image_features.shape == text_features.shape == (4, model.embed_dim)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(4))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    logits_per_image, logits_per_text = model.logits(images, tokens)
    torch.testing.assert_close(logits_per_image, scale * image_features @ text_features.t())
    torch.testing.assert_close(logits_per_text, logits_per_image.t())
    labels = torch.arange(4)
    loss = torch.nn.functional.cross_entropy(logits_per_image, labels)
    loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    untouched = {n for n, _ in model.named_parameters()} - set(trained)
    assert not untouched, f"parameters without gradient: {sorted(untouched)}"


@pytest.mark.parametrize("name", TINY_MODELS)
def test_same_seed_same_weights(name):
    torch.manual_seed(123)
    first = towers.create_model(name).state_dict()
    torch.manual_seed(123)
    second = towers.create_model(name).state_dict()
    torch.manual_seed(124)
    third = towers.create_model(name).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_temperature_at_the_cap_still_takes_gradient_towards_cooler():
    # The trainer stores the cap as float32(ln 100), whose exp is just above 100: a clamp in the forward
    # pass would make the gradient exactly 0 there for ever. Mismatched pairs want a cooler temperature.
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny", text_overrides={"context_length": 16})
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100))
    images = torch.randn(8, 3, 64, 64)
    tokens = towers.tokenize([f"caption {i}" for i in range(8)], 16)
    image_features, text_features, scale = model(images, tokens)
    assert scale.item() == pytest.approx(100, abs=1e-4) and scale.item() > 100  # not clamped to 100.0
    ClipLoss()(image_features, text_features, scale).backward()
    grad = model.logit_scale.grad.item()

    # Reference: central difference of the same contrastive loss in float64, by hand.
    img, txt = image_features.detach().double(), text_features.detach().double()
    labels = torch.arange(8)

    def loss(log_scale: float) -> float:
        logits = math.exp(log_scale) * img @ txt.T
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)).item()

    s, h = model.logit_scale.item(), 1e-5
    expected = (loss(s + h) - loss(s - h)) / (2 * h)
    print(f"d loss / d logit_scale at logit_scale = ln 100: {grad:.6f} (float64 reference {expected:.6f})")
    assert expected > 0.1 and grad == pytest.approx(expected, rel=1e-3)


def test_b32_parameter_counts_on_meta():
    transformer = towers.profile("transformer-B-32")
    mixer = towers.profile("mixer-B-32")
    assert transformer["total_params"] == 151_277_313  # open_clip ViT-B-32, exactly
    assert 105e6 <= mixer["total_params"] <= 117e6
    assert mixer["total_params"] == 111_215_337
    with torch.device("meta"):
        reference = timm.create_model("mixer_b32_224", num_classes=0, pretrained=False)
        ours = towers.build_tower("mixer", "image", "B/32")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}


def test_b32_flops_match_open_clip_profile():
    # open_clip's published profile for ViT-B-32: 4.41 image + 2.98 text GMACs per sample.
    row = towers.profile("transformer-B-32")
    assert row["image_gflops"] == pytest.approx(8.82, rel=0.03)
    assert row["text_gflops"] == pytest.approx(5.96, rel=0.03)


@pytest.mark.parametrize("call, match", [
    (lambda: towers.build_tower("lstm", "image", "B/32"), r"unknown tower family 'lstm'.*mixer.*transformer"),
    (lambda: towers.build_tower("mixer", "audio", "B/32"), r"unknown modality 'audio'.*image.*text"),
    (lambda: towers.build_tower("mixer", "image", "H/14"), r"unknown variant 'H/14'.*tiny.*B/32"),
    (lambda: towers.build_tower("mixer", "text", "tiny", token_mixing="sideways"), r"token mixing mode"),
    (lambda: towers.build_tower("mixer", "text", "tiny", heads=3), r"bad override for mixer text"),
    (lambda: towers.create_model("mixer-B-99"), r"unknown model 'mixer-B-99'.*mixer-B-32"),
    (lambda: towers.create_model("mlp+mixer-tiny"), r"unknown model"),
])
def test_bad_names_raise_value_error_listing_choices(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_model_table_prints_every_model(capsys):
    from towers.__main__ import main

    main(["--models", "transformer-B-32", "mixer-B-32"])
    out = capsys.readouterr().out
    assert "151,277,313" in out and "111,215,337" in out
