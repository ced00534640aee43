"""The text mask: how a text tower reads a caption, one meaning for every text family (`--text-mask`).

- `causal`: each position reads itself and the positions before it (CLIP's text Transformer).
- `caption`: each position reads every position up to its row's EOT and nothing after it:
  bidirectional inside the caption, pad-inert (no token after EOT can change the embedding).

The Transformer text tower applies it as an attention mask built from each row's EOT (the largest id,
where CLIP pools), not from token id 0 as open_clip's `use_pad_mask` does (id 0 is the BPE token "!").
The Mixer text tower applies it through its token mixing: `caption` -> `caption` mixing, `causal` ->
`causal-prefix` mixing (`towers.token_mixing`). The Mixer's other token-mixing modes stay reachable with
`--token-mixing` for ablations; each belongs to one mask, and a conflicting pair is an error.

DEFAULT_TEXT_MASK is the one default (the Recipe's), chosen by the text-mask 2x2 (docs/text-mask.md).
A model built by name, an older checkpoint (no `text_mask` in its config) and
loaded open_clip/OpenAI weights keep each family's own behaviour: Transformer causal, Mixer its saved
token mixing.
"""

from __future__ import annotations

import torch

# the token-mixing masks and the legacy rule are vocabulary the torch-free report reads too
from runfolder.vocabulary import (  # noqa: F401 - re-exported
    MIXER_TOKEN_MIXING,
    TOKEN_MIXING_TEXT_MASK,
    legacy_text_reading,
)

TEXT_MASKS = ("causal", "caption")
# The text-mask 2x2 chose it (docs/results/text_mask.md): never worse in any cell, and both text towers
# of the headline comparison then read a caption the same way.
DEFAULT_TEXT_MASK = "caption"
def check_text_mask(text_mask: str) -> str:
    if text_mask not in TEXT_MASKS:
        raise ValueError(f"text mask {text_mask!r}: expected one of {TEXT_MASKS}")
    return text_mask


def resolve_token_mixing(text_mask: str, token_mixing: str | None) -> str:
    """The Mixer token mixing for `text_mask`; an explicit mode must read with that mask."""
    check_text_mask(text_mask)
    if token_mixing is None:
        return MIXER_TOKEN_MIXING[text_mask]
    if token_mixing not in TOKEN_MIXING_TEXT_MASK:
        raise ValueError(f"--token-mixing {token_mixing}: expected one of {tuple(TOKEN_MIXING_TEXT_MASK)}")
    if TOKEN_MIXING_TEXT_MASK[token_mixing] != text_mask:
        mask = TOKEN_MIXING_TEXT_MASK[token_mixing]
        raise ValueError(f"--token-mixing {token_mixing} is a {mask}-mask mode but --text-mask is "
                         f"{text_mask}: pass --text-mask {mask} or leave --token-mixing unset")
    return token_mixing


def caption_keys(tokens: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids -> (B, L) bool, True at the positions up to and including each row's EOT."""
    eot = tokens.argmax(dim=-1)
    return torch.arange(tokens.shape[1], device=tokens.device) <= eot[:, None]


def caption_attention_mask(tokens: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B * heads, L, L) for nn.MultiheadAttention: 0 on keys up to each row's EOT, -inf
    after it, the same for every query. Every row keeps key 0, so no softmax row is empty."""
    batch, length = tokens.shape
    keys = torch.zeros(batch, length, dtype=dtype, device=tokens.device)
    keys = keys.masked_fill(~caption_keys(tokens), float("-inf"))
    # MultiheadAttention takes a per-row mask only as (B * heads, L, L); one copy serves every block
    return keys[:, None, None, :].expand(batch, heads, length, length).reshape(batch * heads, length, length)
