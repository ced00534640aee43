"""The Mixer text tower's token mixing: every pad-inert mode ignores everything after EOT, `full` does not."""

from __future__ import annotations

import pytest
import torch

import towers
from towers.token_mixing import PAD_INERT_MODES, build_token_mixing


def _tower(mode: str):
    torch.manual_seed(0)
    return towers.build_tower("mixer", "text", "tiny", token_mixing=mode).eval()


def _tokens():
    tokens = towers.tokenize(["a small red triangle on a blue background", "green star"])
    eot = tokens.argmax(dim=-1)
    assert eot.tolist() == [9, 3]
    return tokens, eot


@pytest.mark.parametrize("mode", PAD_INERT_MODES)
@pytest.mark.parametrize("position_after_eot", [1, 5, 40])
def test_pad_inert_modes_ignore_any_token_after_eot(mode, position_after_eot):
    tower = _tower(mode)
    tokens, eot = _tokens()
    changed = tokens.clone()
    for row, end in enumerate(eot.tolist()):
        changed[row, end + position_after_eot] = 1234  # overwrite padding after EOT
    with torch.no_grad():
        assert torch.equal(tower(tokens), tower(changed))  # bit-identical


@pytest.mark.parametrize("mode", PAD_INERT_MODES)
def test_pad_inert_modes_see_every_token_before_eot(mode):
    tower = _tower(mode)
    tokens, eot = _tokens()
    with torch.no_grad():
        base = tower(tokens)
        for position in range(1, int(eot[1])):  # each token of the second text
            changed = tokens.clone()
            changed[1, position] = 1234
            out = tower(changed)
            assert torch.equal(out[0], base[0])
            assert (out[1] - base[1]).abs().max() > 1e-4


def test_full_mode_lets_padding_change_the_embedding():
    tower = _tower("full")
    tokens, eot = _tokens()
    changed = tokens.clone()
    changed[0, eot[0] + 5] = 1234
    with torch.no_grad():
        assert (tower(tokens)[0] - tower(changed)[0]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["causal", "causal-front", "triangular", "causal-prefix"])
def test_causal_token_mixing_jacobian_is_lower_triangular(mode):
    torch.manual_seed(0)
    mlp = build_token_mixing(mode, positions=77, hidden=256)
    x = torch.randn(77)
    jacobian = torch.autograd.functional.jacobian(lambda v: mlp(v[None])[0], x)  # (out 77, in 77)
    assert torch.count_nonzero(torch.triu(jacobian, diagonal=1)) == 0
    assert torch.count_nonzero(torch.diagonal(jacobian)) > 70  # and it does mix the past


def test_caption_mixing_is_bidirectional_inside_the_caption():
    """`caption` lets an early position read a later one, as long as both are up to EOT."""
    tower = _tower("caption")
    tokens, eot = _tokens()
    outputs = []
    tower.blocks[0].register_forward_hook(lambda module, args, out: outputs.append(out))
    changed = tokens.clone()
    changed[0, int(eot[0]) - 1] = 1234  # the last word of the first text
    with torch.no_grad():
        tower(tokens), tower(changed)
    base, after = outputs
    assert (after[0, 1] - base[0, 1]).abs().max() > 1e-4  # position 1 read the later word
    assert torch.equal(after[1], base[1])
