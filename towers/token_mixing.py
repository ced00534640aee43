"""Token mixing of the Mixer text tower: the modes of `--token-mixing`, each (B, C, L) -> (B, C, L).

The text feature is read at EOT, so what matters is how much of a layer the EOT position can read.
Every mode except `full` is pad-inert: no token after EOT, and no padding, can change the EOT feature,
so a batch may stop at its longest EOT (`CLIP.encode_text` does in eval mode).

- `causal`: a two-layer MLP masked MADE-style. Hidden unit k has a degree d(k), spread evenly over the
  positions (k * L // H); it reads positions j <= d(k), and position i reads it when d(k) <= i. A short
  caption's EOT reads few units: at B/32, EOT 12 reads 44 of 256.
- `causal-front`: the same masks with the degrees front-loaded where captions end,
  d(k) = 1 + floor((L - 1) * (k / H)^2), so position e reads about H * sqrt(e / (L - 1)) units (EOT 12
  at B/32: 102 of 256) and every position after the start token is still read by some unit.
- `caption`: an unmasked MLP over the positions, whose input has every position after each row's EOT
  zeroed in every block: mixing is bidirectional inside the caption (like the seed paper), all H units
  read it, and padding contributes nothing.
- `triangular`: one lower-triangular L x L linear map across positions (the causal spatial projection
  of gMLP's spatial gating unit, without the gate): EOT at e reads its e + 1 weights.
- `full`: the seed paper's unmasked MLP over all positions, padding included (for replication).
- `causal-prefix` (the Mixer's `--text-mask causal`): a prefix-masked MLP. Every position owns a block of
  u = ceil(H / (PREFIX_EOT + 1)) hidden units that read the positions up to it (MADE masks, degree = the
  owning position, L x u units in all), and position i reads all units of the positions <= i: an EOT at
  e reads (e + 1) x u units, at least the H that `caption` gives once e >= PREFIX_EOT (B/32: 260 of
  1540 at EOT 12; cost in docs/text-mask.md).

Each module's `reads_at(eot)` gives its capacity at an EOT position: the hidden units (None for
`triangular`) and the token-mixing weights on the paths into that position.
"""

from __future__ import annotations

import bisect

import torch
import torch.nn.functional as F
from torch import nn

TOKEN_MIXING_MODES = ("causal", "causal-front", "caption", "triangular", "full", "causal-prefix")
PAD_INERT_MODES = tuple(mode for mode in TOKEN_MIXING_MODES if mode != "full")
DEFAULT_TOKEN_MIXING = "caption"  # chosen by the toy comparison in docs/token-mixing.md
# `causal-prefix` sizes its blocks so that an EOT from this position on reads >= the H units of `caption`
# (12: the EOT of a 10-word caption with SOT, the length the capacity figures are quoted at)
PREFIX_EOT = 12


def prefix_degrees(hidden: int, positions: int) -> list[int]:
    """`causal-prefix`: ceil(H / (PREFIX_EOT + 1)) units owned by each position, degree = its position."""
    per_position = -(-hidden // (PREFIX_EOT + 1))
    return [position for position in range(positions) for _ in range(per_position)]


def made_degrees(hidden: int, positions: int) -> list[int]:
    """Degree of each hidden unit, spread evenly over the positions (MADE's deterministic order); plain
    Python, as the model may be built on the meta device."""
    return [k * positions // hidden for k in range(hidden)]


def front_loaded_degrees(hidden: int, positions: int) -> list[int]:
    """Degrees 1 + floor((L - 1)(k / H)^2), ascending: dense over the first positions, where EOTs fall."""
    return [1 + (positions - 1) * k * k // (hidden * hidden) for k in range(hidden)]


class MadeTokenMixing(nn.Module):
    """Two-layer MLP across positions, masked so that position i reads only positions <= i."""

    def __init__(self, positions: int, hidden: int, degrees: list[int]):
        super().__init__()
        if sorted(degrees) != degrees or len(degrees) != hidden:
            raise ValueError("MADE degrees must be one ascending degree per hidden unit")
        self.fc1 = nn.Linear(positions, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, positions)
        degree, position = torch.tensor(degrees), torch.arange(positions)  # on the module's device
        # Buffers, not parameters: the mask is architecture, and it travels with the module.
        self.register_buffer("mask1", (position[None, :] <= degree[:, None]).float(), persistent=False)
        self.register_buffer("mask2", (degree[None, :] <= position[:, None]).float(), persistent=False)
        # plain Python (the model may be built on the meta device): units_below[L] = units of degree < L
        self.degrees = list(degrees)
        self.units_below = [bisect.bisect_left(self.degrees, length) for length in range(positions + 1)]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, L) -> (B, C, L), L <= positions (the first L positions); `keep` is not needed."""
        w1, w2 = self.fc1.weight * self.mask1, self.fc2.weight * self.mask2
        b1, b2 = self.fc1.bias, self.fc2.bias
        length = x.shape[-1]
        if length < self.fc1.in_features:
            # Positions < L read only units of degree < L (the first ones: degrees ascend), and those
            # read only positions < L: slicing drops terms that the masks make zero.
            hidden = self.units_below[length]
            w1, b1, w2, b2 = w1[:hidden, :length], b1[:hidden], w2[:length, :hidden], b2[:length]
        return F.linear(self.act(F.linear(x, w1, b1)), w2, b2)

    def reads_at(self, eot: int) -> dict:
        units = self.degrees[: self.units_below[eot + 1]]
        return {"units": len(units), "weights": sum(d + 1 for d in units) + len(units)}


class CaptionTokenMixing(nn.Module):
    """Two-layer MLP across positions that sees only the caption: positions after EOT are zeroed first.

    With `sees_padding` it ignores `keep` and mixes every position: the seed paper's `full` mode."""

    def __init__(self, positions: int, hidden: int, sees_padding: bool = False):
        super().__init__()
        self.sees_padding = sees_padding
        self.fc1 = nn.Linear(positions, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, positions)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, L) -> (B, C, L); `keep` (B, 1, L) is True up to each row's EOT (None: keep all)."""
        length = x.shape[-1]
        w1, w2, b2 = self.fc1.weight, self.fc2.weight, self.fc2.bias
        if keep is not None and not self.sees_padding:
            x = x.masked_fill(~keep, 0.0)
        if length < self.fc1.in_features:  # the cut positions are zero, so their weights add nothing
            w1, w2, b2 = w1[:, :length], w2[:length], b2[:length]
        return F.linear(self.act(F.linear(x, w1, self.fc1.bias)), w2, b2)

    def reads_at(self, eot: int) -> dict:
        hidden, positions = self.fc1.out_features, self.fc1.in_features
        return {"units": hidden, "weights": hidden * ((positions if self.sees_padding else eot + 1) + 1)}


class TriangularTokenMixing(nn.Module):
    """One lower-triangular linear map across positions: position i is a learned sum of positions <= i."""

    def __init__(self, positions: int):
        super().__init__()
        self.fc = nn.Linear(positions, positions)
        self.register_buffer("mask", torch.ones(positions, positions).tril(), persistent=False)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        length = x.shape[-1]
        weight = (self.fc.weight * self.mask)[:length, :length]
        return F.linear(x, weight, self.fc.bias[:length])

    def reads_at(self, eot: int) -> dict:
        return {"units": None, "weights": eot + 1}


def build_token_mixing(mode: str, positions: int, hidden: int) -> nn.Module:
    """The token-mixing module of one block for `mode` (see the module docstring)."""
    if mode == "causal":
        return MadeTokenMixing(positions, hidden, made_degrees(hidden, positions))
    if mode == "causal-front":
        return MadeTokenMixing(positions, hidden, front_loaded_degrees(hidden, positions))
    if mode in ("caption", "full"):
        return CaptionTokenMixing(positions, hidden, sees_padding=mode == "full")
    if mode == "triangular":
        return TriangularTokenMixing(positions)
    if mode == "causal-prefix":
        degrees = prefix_degrees(hidden, positions)
        return MadeTokenMixing(positions, len(degrees), degrees)
    raise ValueError(f"token mixing mode {mode!r}: expected one of {TOKEN_MIXING_MODES}")

