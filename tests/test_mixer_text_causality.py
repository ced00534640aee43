"""The Mixer text tower's token mixing: causal mode ignores everything after EOT, full mode does not."""

from __future__ import annotations

import pytest
import torch

import towers
from towers.mixer import TokenMixingMlp


def _tower(mode: str):
    torch.manual_seed(0)
    return towers.build_tower("mixer", "text", "tiny", token_mixing=mode).eval()


def _tokens():
    tokens = towers.tokenize(["a small red triangle on a blue background", "green star"])
    eot = tokens.argmax(dim=-1)
    assert eot.tolist() == [9, 3]
    return tokens, eot


@pytest.mark.parametrize("position_after_eot", [1, 5, 40])
def test_causal_ignores_any_token_after_eot(position_after_eot):
    tower = _tower("causal")
    tokens, eot = _tokens()
    changed = tokens.clone()
    for row, end in enumerate(eot.tolist()):
        changed[row, end + position_after_eot] = 1234  # overwrite padding after EOT
    with torch.no_grad():
        assert torch.equal(tower(tokens), tower(changed))  # bit-identical


def test_causal_sees_every_token_before_eot():
    tower = _tower("causal")
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


def test_causal_token_mixing_jacobian_is_lower_triangular():
    torch.manual_seed(0)
    mlp = TokenMixingMlp(positions=77, hidden=256, mode="causal")
    x = torch.randn(77)
    jacobian = torch.autograd.functional.jacobian(lambda v: mlp(v[None])[0], x)  # (out 77, in 77)
    assert torch.count_nonzero(torch.triu(jacobian, diagonal=1)) == 0
    assert torch.count_nonzero(torch.diagonal(jacobian)) > 70  # and it does mix the past
