"""The text mask (`--text-mask causal|caption`) means the same for every text family: checked per family
x mask against the definitions (pad-inert, who reads a later word) and against independent references."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import TextTransformer

import towers
from launch.config import Experiment, Recipe, parse_experiment, with_legacy_text_mask
from towers.clip import longest_eot
from towers.registry import text_mask_overrides
from towers.text_mask import DEFAULT_TEXT_MASK, TEXT_MASKS, caption_attention_mask, caption_keys
from towers.token_mixing import build_token_mixing

# fp32 round-off only: a shorter run has other matmul shapes, so other kernels and summation orders
# (up to 1.1e-6 of the features' scale on an AVX-512 CPU); a wrong mask or position moves them by O(1).
TOLERANCE = 1e-5
ARMS = [(family, mask) for family in ("transformer", "mixer") for mask in TEXT_MASKS]
TEXTS = ["a small red triangle on a blue background", "green star"]


def _tower(family: str, mask: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return towers.build_tower(family, "text", "tiny", **text_mask_overrides(family, mask)).eval()


def _last_block(tower: torch.nn.Module) -> torch.nn.Module:
    return tower.transformer.resblocks[-1] if hasattr(tower, "transformer") else tower.blocks[-1]


def _tokens() -> tuple[torch.Tensor, list[int]]:
    tokens = towers.tokenize(TEXTS)
    eot = tokens.argmax(dim=-1).tolist()
    assert eot == [9, 3]
    return tokens, eot


@pytest.mark.parametrize("family, mask", ARMS)
@pytest.mark.parametrize("after", [1, 7, 40])
def test_any_token_after_eot_leaves_the_embedding_bit_identical(family, mask, after):
    tower = _tower(family, mask)
    tokens, eot = _tokens()
    changed = tokens.clone()
    for row, end in enumerate(eot):
        changed[row, end + after] = 1234
        changed[row, end + after + 1:] = 0  # id 0 is "!", not padding: it must not matter either
    with torch.no_grad():
        assert torch.equal(tower(tokens), tower(changed))


@pytest.mark.parametrize("family, mask", ARMS)
def test_caption_reads_a_later_word_at_an_earlier_position_and_causal_does_not(family, mask):
    tower = _tower(family, mask)
    tokens, eot = _tokens()
    outputs = []
    _last_block(tower).register_forward_hook(lambda module, args, out: outputs.append(out))
    changed = tokens.clone()
    changed[0, eot[0] - 1] = 1234  # the last word of the first caption
    with torch.no_grad():
        tower(tokens), tower(changed)
    base, after = outputs
    earlier = base[0, :eot[0] - 1], after[0, :eot[0] - 1]  # positions before the changed word
    if mask == "caption":
        assert (earlier[1] - earlier[0]).abs().amax(dim=-1).min() > 1e-4  # every one of them read it
    else:
        assert torch.equal(*earlier)
    assert torch.equal(after[1], base[1])  # the other caption is untouched either way


@pytest.mark.parametrize("family, mask", ARMS)
def test_features_stopped_at_the_longest_eot_equal_the_full_length_ones(family, mask):
    torch.manual_seed(0)
    model = towers.create_model(f"{family}-tiny", text_overrides=text_mask_overrides(family, mask)).eval()
    tokens = towers.tokenize(TEXTS + ["a bad photo of the great white shark, a type of fish."])
    with torch.no_grad():
        full = model.encode_text(tokens, stop_at_eot=False)
        short = model.encode_text(tokens, stop_at_eot=True)
        tower_short = model.text(tokens[:, :longest_eot(tokens)])
    assert longest_eot(tokens) < 20
    assert (short - full).abs().max().item() <= TOLERANCE * full.abs().max().item()
    assert torch.equal(tower_short @ model.text_projection, short)


def test_transformer_caption_is_open_clips_unmasked_transformer_on_the_caption_alone():
    """Independent reference: open_clip's TextTransformer without a causal mask, fed each caption cut
    at its EOT (so there is nothing after it to mask), with the same weights."""
    ours = _tower("transformer", "caption")
    reference = TextTransformer(context_length=77, vocab_size=ours.vocab_size, width=128, heads=4, layers=4,
                                output_dim=None, proj_type="none", no_causal_mask=True).eval()
    reference.load_state_dict(ours.state_dict())
    tokens, eot = _tokens()
    with torch.no_grad():
        got = ours(tokens)
        want = torch.cat([reference(tokens[row:row + 1, :end + 1]) for row, end in enumerate(eot)])
    assert (got - want).abs().max().item() <= TOLERANCE * want.abs().max().item()


@pytest.mark.parametrize("positions", [77, 32])
def test_causal_prefix_gives_every_position_all_units_of_the_positions_up_to_it(positions):
    """Each position owns ceil(256 / 13) = 20 units that read it and the positions before it; position i
    reads exactly the units owned by positions <= i, so an EOT at >= 12 reads >= caption's 256 units."""
    mixing = build_token_mixing("causal-prefix", positions, hidden=256)
    owner = torch.arange(positions).repeat_interleave(20)
    assert mixing.fc1.out_features == 20 * positions
    assert torch.equal(mixing.mask1.bool(), torch.arange(positions)[None, :] <= owner[:, None])
    assert torch.equal(mixing.mask2.bool(), owner[None, :] <= torch.arange(positions)[:, None])
    caption = build_token_mixing("caption", positions, hidden=256)
    for eot in (12, 20, positions - 1):
        assert mixing.reads_at(eot)["units"] == 20 * (eot + 1) >= caption.reads_at(eot)["units"]


def test_caption_keys_come_from_the_eot_not_from_token_id_zero():
    tokens = torch.tensor([[49406, 0, 5, 49407, 0, 0], [49406, 49407, 7, 7, 0, 0]])  # id 0 is "!"
    assert caption_keys(tokens).tolist() == [[True] * 4 + [False] * 2, [True] * 2 + [False] * 4]


def test_one_default_mask_for_both_families_and_the_token_mixing_it_selects():
    assert Recipe().text_mask == DEFAULT_TEXT_MASK == "caption"  # the 2x2's choice, docs/text-mask.md
    assert Experiment().token_mixing == "caption"
    assert Experiment(recipe=Recipe(text_mask="causal")).token_mixing == "causal-prefix"
    kwargs = Experiment(text_tower="transformer", recipe=Recipe(text_mask="causal")).model_kwargs()
    assert kwargs["text_overrides"]["text_mask"] == "causal"
    experiment, _ = parse_experiment(["--text-mask", "causal", "--token-mixing", "causal-front"])
    assert (experiment.recipe.text_mask, experiment.token_mixing) == ("causal", "causal-front")
    same = [parse_experiment(["--tower", tower])[0].recipe.with_precision("cpu")[0].sha256(1, {})
            for tower in ("mixer", "transformer")]
    causal = parse_experiment(["--text-mask", "causal"])[0].recipe.with_precision("cpu")[0]
    assert same[0] == same[1] != causal.sha256(1, {})


@pytest.mark.parametrize("argv, message", [
    (["--token-mixing", "causal"], "--token-mixing causal is a causal-mask mode but --text-mask is caption"),
    (["--text-mask", "causal", "--token-mixing", "full"], "--token-mixing full is a caption-mask mode"),
    (["--text-mask", "sideways"], "--text-mask: invalid choice"),
])
def test_a_conflicting_or_unknown_mask_is_a_one_line_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("family, token_mixing, mask", [("transformer", "caption", "causal"),
                                                        ("mixer", "causal", "causal"),
                                                        ("mixer", "caption", "caption")])
def test_older_checkpoints_and_run_records_keep_their_behaviour(family, token_mixing, mask, tmp_path):
    # a checkpoint from before the text mask: no text_mask in its config (Transformer), or only the
    # Mixer's token mixing, as launch/train.py wrote them
    overrides = {"token_mixing": token_mixing} if family == "mixer" else {}
    torch.manual_seed(0)
    old = towers.create_model(f"{family}-tiny", text_overrides=overrides)
    path = tmp_path / "old.pt"
    torch.save({"model_config": old.model_config, "state_dict": old.state_dict()}, path)
    loaded, _ = towers.load(path)
    reads = getattr(loaded.text, "text_mask", None) or loaded.text.token_mixing
    assert reads == ("causal" if family == "transformer" else token_mixing)
    # what the new code builds for that reading, asked for explicitly
    reference = towers.build_tower(family, "text", "tiny", **text_mask_overrides(
        family, mask, token_mixing if family == "mixer" else None)).eval()
    reference.load_state_dict(old.text.state_dict())
    tokens, _ = _tokens()
    with torch.no_grad():
        assert torch.equal(loaded.text(tokens), reference(tokens))
    recorded = {"text_tower": family, "token_mixing": token_mixing, "recipe": {"seed": 0}}
    filled = with_legacy_text_mask(recorded)
    assert filled["recipe"]["text_mask"] == mask
    assert Experiment(text_tower=family, token_mixing=filled["token_mixing"],
                      recipe=Recipe(text_mask=mask)).token_mixing == filled["token_mixing"]


def test_caption_mask_is_built_per_row_so_no_split_of_the_batch_changes_it():
    """Nothing in the mask depends on the batch or process split: halves give the halves of the mask."""
    tokens = towers.tokenize(TEXTS + ["a photo of a tench.", "goldfish"])
    whole = caption_attention_mask(tokens, heads=4, dtype=torch.float32)
    halves = torch.cat([caption_attention_mask(part, heads=4, dtype=torch.float32)
                        for part in tokens.split(2)])
    assert torch.equal(whole, halves)


def test_the_cost_benchmark_counts_the_mask_bytes_and_the_cpu_kernels_take_the_caption_mask():
    from benchmarks.performance import text_mask_cost

    # (B x 8 heads x 77 x 77) fp32 at B/32; the causal mask is one 77 x 77; Mixer hidden B x 512 x H
    transformer = {mask: text_mask_cost.mask_bytes("transformer", mask, 256)["attention_mask_bytes"]
                   for mask in TEXT_MASKS}
    assert transformer == {"caption": 256 * 8 * 77 * 77 * 4, "causal": 77 * 77 * 4}
    assert text_mask_cost.mask_bytes("mixer", "causal", 2) == {"token_hidden": 1540,
                                                               "hidden_bytes_per_block": 2 * 512 * 1540 * 4}
    accepted = text_mask_cost.accepted_backends("caption", "cpu")
    assert "math" in accepted and "efficient" not in accepted  # the memory-efficient kernel is CUDA-only
