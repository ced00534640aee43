"""What each token-mixing mode reads at EOT: counted by autograd, and equal to the committed table."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from benchmarks import token_mixing_capacity as capacity
from launch.config import Experiment
from towers.mixer import MixerTextTower
from towers.token_mixing import DEFAULT_TOKEN_MIXING, TOKEN_MIXING_MODES, build_token_mixing

DOC = Path(__file__).resolve().parents[1] / "docs" / "token-mixing.md"


def _reads_by_autograd(mode: str, positions: int, eot: int) -> dict:
    """Units and weights whose gradient at the EOT output is non-zero: an independent count."""
    torch.manual_seed(0)
    mixing = build_token_mixing(mode, positions, hidden=256)
    x = torch.randn(1, 1, positions)
    keep = (torch.arange(positions) <= eot)[None, None, :]
    mixing(x, keep)[0, 0, eot].backward()
    weights = [p for name, p in mixing.named_parameters() if name.endswith("weight")]
    units = None if mode == "triangular" else int(torch.count_nonzero(mixing.fc2.weight.grad[eot]))
    return {"units": units, "weights": sum(int(torch.count_nonzero(p.grad)) for p in weights)}


@pytest.mark.parametrize("mode", TOKEN_MIXING_MODES)
@pytest.mark.parametrize("positions, eot", [(77, 9), (77, 12), (77, 20), (77, 76), (32, 12), (32, 31)])
def test_reads_at_eot_are_the_weights_that_reach_it(mode, positions, eot):
    mixing = build_token_mixing(mode, positions, hidden=256)
    assert mixing.reads_at(eot) == _reads_by_autograd(mode, positions, eot)


def test_the_issue_figures_and_the_gain_of_each_mode_at_b32():
    reads = {mode: build_token_mixing(mode, 77, 256).reads_at(12)["units"] for mode in TOKEN_MIXING_MODES}
    assert reads == {"causal": 44, "causal-front": 102, "caption": 256, "triangular": None, "full": 256,
                     "causal-prefix": 260}
    assert build_token_mixing("causal", 32, 256).reads_at(12)["units"] == 104  # tiny


@pytest.fixture(scope="module")
def table_rows() -> list[dict]:
    return capacity.capacity_table()


def test_the_committed_table_is_what_the_code_counts(table_rows):
    table = DOC.read_text()
    for line in capacity.markdown(table_rows).splitlines():
        assert line in table, f"docs/token-mixing.md is stale; regenerate it with " \
                              f"`python -m benchmarks.token_mixing_capacity`: missing {line!r}"


def test_every_mode_keeps_the_b32_mixer_clip_within_105_to_117m(table_rows):
    b32 = {row["mode"]: row["total_params"] for row in table_rows if row["variant"] == "B/32"}
    assert set(b32) == set(TOKEN_MIXING_MODES)
    assert all(105e6 <= params <= 117e6 for params in b32.values()), b32


def test_one_default_token_mixing_everywhere_and_the_documented_one():
    tower = inspect.signature(MixerTextTower).parameters["token_mixing"].default
    assert tower == Experiment().token_mixing == DEFAULT_TOKEN_MIXING
    assert f"default: `{DEFAULT_TOKEN_MIXING}`" in DOC.read_text()
