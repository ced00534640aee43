"""Our Transformer CLIP is open_clip's: the same weights give the same embeddings (fp32, <= 1e-5)."""

from __future__ import annotations

import csv

import open_clip
import pytest
import torch

import towers

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sentences(shared_data) -> list[str]:
    with open(shared_data / "captions" / "captions.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [caption for _, caption in rows[:6]] + ["", "a " * 100]  # empty and over-long too


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _assert_same_embeddings(reference, ours, sentences):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 224, 224)
    tokens = towers.tokenize(sentences)
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-B-32")(sentences))
    with torch.no_grad():
        image_diff = _max_diff(reference.encode_image(images), ours.encode_image(images))
        text_diff = _max_diff(reference.encode_text(tokens), ours.encode_text(tokens))
        ref_out, our_out = reference(images, tokens), ours(images, tokens)
    assert image_diff <= TOLERANCE and text_diff <= TOLERANCE, (image_diff, text_diff)
    for ref, our in zip(ref_out, our_out, strict=True):
        assert _max_diff(ref, our) <= TOLERANCE
    return image_diff, text_diff


def test_open_clip_vit_b32_state_dict_gives_the_same_embeddings(sentences):
    torch.manual_seed(42)
    reference = open_clip.create_model("ViT-B-32").eval()
    ours = towers.create_model("transformer-B-32").eval()
    towers.load_weights(ours, reference.state_dict(), "open_clip ViT-B-32")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    _assert_same_embeddings(reference, ours, sentences)


def test_openai_checkpoint_layout_loads_with_quick_gelu(sentences, tmp_path):
    # OpenAI's files: open_clip's CLIP keys plus three scalars, trained with QuickGELU.
    torch.manual_seed(7)
    reference = open_clip.create_model("ViT-B-32-quickgelu").eval()
    state = dict(reference.state_dict())
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    path = tmp_path / "ViT-B-32-openai.pt"
    torch.save(state, path)
    ours, preprocess = towers.load(path)
    assert ours.model_name == "transformer-B-32"
    assert ours.model_config["image_overrides"]["quick_gelu"] is True
    _assert_same_embeddings(reference, ours, sentences)


def test_a_vit_of_another_size_is_read_off_the_shapes(sentences, tmp_path):
    torch.manual_seed(3)
    reference = open_clip.create_model("ViT-S-32").eval()
    path = tmp_path / "vit-s-32.pt"
    torch.save(reference.state_dict(), path)
    ours, _ = towers.load(path)
    assert ours.model_name == "transformer-S-32"
    _assert_same_embeddings(reference, ours, sentences)
