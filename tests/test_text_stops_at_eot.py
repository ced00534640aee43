"""Causal text towers run only up to the batch's longest EOT and give the full-length features (fp32)."""

from __future__ import annotations

import pytest
import torch
from open_clip import IMAGENET_CLASSNAMES

import towers
from towers.clip import longest_eot
from towers.token_mixing import PAD_INERT_MODES

# fp32 round-off only: a shorter run has other matmul shapes, so other kernels and summation orders
# (up to 1.1e-6 of the features' scale on an AVX-512 CPU); a wrong mask or position moves them by O(1).
TOLERANCE = 1e-5
# ragged: 3 to 14 tokens up to EOT in a 77-token context, plus one that fills the context
PROMPTS = ["a photo of a tench.", "goldfish", "a bad photo of the great white shark, a type of fish.",
           "a cropped photo of a small cock."]


def _model(name: str, **text_overrides) -> towers.CLIP:
    torch.manual_seed(0)
    return towers.create_model(name, text_overrides=text_overrides or None).eval()


@pytest.mark.parametrize("name, mode", [("transformer-tiny", None), *(("mixer-tiny", mode) for mode in
                                                                  PAD_INERT_MODES)])
def test_features_equal_the_full_length_ones(name, mode):
    model = _model(name, **({"token_mixing": mode} if mode else {}))
    tokens = towers.tokenize(PROMPTS)
    length = longest_eot(tokens)
    assert length == int(tokens.argmax(dim=-1).max()) + 1 < 20  # far fewer than 77 positions
    with torch.no_grad():
        full = model.encode_text(tokens, stop_at_eot=False)
        short = model.encode_text(tokens, stop_at_eot=True)
        # and the tower really ran on the short batch: the short run's tower input had `length` columns
        tower_short = model.text(tokens[:, :length])
    assert short.shape == full.shape
    assert (short - full).abs().max().item() <= TOLERANCE * full.abs().max().item()
    assert torch.allclose(tower_short @ model.text_projection, short, atol=0, rtol=0)
    # each row on its own (its own shorter length) agrees too
    with torch.no_grad():
        alone = torch.cat([model.encode_text(tokens[i:i + 1], stop_at_eot=True) for i in range(len(PROMPTS))])
    assert (alone - full).abs().max().item() <= TOLERANCE * full.abs().max().item()


@pytest.mark.parametrize("name", ["transformer-tiny", "mixer-tiny"])
def test_eval_mode_stops_at_eot_and_training_mode_does_not(name, monkeypatch):
    model = _model(name)
    tokens = towers.tokenize(PROMPTS)
    seen = []
    forward = model.text.forward
    monkeypatch.setattr(model.text, "forward", lambda t: seen.append(t.shape[1]) or forward(t))
    with torch.no_grad():
        model.eval().encode_text(tokens)
        model.train().encode_text(tokens)
    assert seen == [longest_eot(tokens), 77]


def test_a_context_filling_prompt_keeps_every_position():
    tokens = towers.tokenize(["word " * 200])  # truncated: EOT at position 76
    assert longest_eot(tokens) == 77


def test_full_token_mixing_keeps_every_position():
    model = _model("mixer-tiny", token_mixing="full")
    tokens = towers.tokenize(PROMPTS)
    with torch.no_grad():
        short = model.encode_text(tokens, stop_at_eot=True)
        assert torch.equal(short, model.encode_text(tokens, stop_at_eot=False))
        with pytest.raises(ValueError, match="exactly 77"):
            model.text(tokens[:, :20])


@pytest.mark.parametrize("mode", ["causal", "causal-front"])
def test_sliced_causal_token_mixing_equals_the_masked_full_one(mode):
    """The sliced token-mixing MLP against an independent reference: the masked full product, cut."""
    torch.manual_seed(1)
    mixing = towers.token_mixing.build_token_mixing(mode, positions=77, hidden=256)
    x = torch.randn(3, 8, 77)
    w1, w2 = mixing.fc1.weight * mixing.mask1, mixing.fc2.weight * mixing.mask2
    full = torch.nn.functional.linear(mixing.act(torch.nn.functional.linear(x, w1, mixing.fc1.bias)),
                                      w2, mixing.fc2.bias)
    for length in (1, 5, 30, 76):
        with torch.no_grad():
            short = mixing(x[..., :length])
        assert short.shape == (3, 8, length)
        assert (short - full[..., :length]).abs().max().item() <= TOLERANCE


def test_the_classifier_cost_benchmark_builds_equal_classifiers_both_ways(capsys):
    from benchmarks.performance import classifier_cost

    result = classifier_cost.main(["--model", "mixer-tiny", "--classes", "2", "--repeats", "1",
                                   "--templates", "simple"])
    assert result["prompts"] == 14 and result["max_abs_difference"] <= TOLERANCE
    assert classifier_cost.spread_classes(3) == [IMAGENET_CLASSNAMES[i] for i in (0, 500, 999)]
    assert "speed-up" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        classifier_cost.main(["--classes", "0"])
    assert exit_info.value.code == 2 and "--classes 0: expected 1..1000" in capsys.readouterr().err
