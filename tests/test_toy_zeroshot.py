"""benchmarks.toy_zeroshot: seen / held-out top-1, R@1 with merged duplicate captions and the val loss,
each against a fake encoder whose exact score is known or against open_clip's own loss."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

import towers
from benchmarks import toy_zeroshot
from benchmarks.data import toy as toy_data
from benchmarks.data.shards import eval_loader
from benchmarks.encoder import FakeEncoder, ModelEncoder


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory):
    return toy_data.ensure_toy(tmp_path_factory.mktemp("toy"), num_train=8, num_val=192, shard_size=64,
                               progress=False)


def _key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def _val(toy) -> list[tuple]:
    return [(image, caption, int(cls), key) for images, captions, classes, keys in
            eval_loader(toy.val, None, with_class=True)
            for image, caption, cls, key in zip(images, captions, classes, keys, strict=True)]


def _one_hot(index: int, dim: int = 64) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[index] = 1.0
    return vector


def _first_class_named(text: str) -> int:
    """The class whose name comes first in the text (a caption names its target first)."""
    found = [(text.index(name), i) for i, name in enumerate(toy_data.CLASS_NAMES) if name in text]
    return min(found)[1]


def test_a_perfect_encoder_scores_100_on_both_splits_and_its_exact_recall(small_toy):
    val = _val(small_toy)
    perfect = FakeEncoder(lambda text: _one_hot(_first_class_named(text)), lambda image: None)
    pixels = {_key(perfect.preprocess(image)): cls for image, _, cls, _ in val}
    perfect = FakeEncoder(lambda text: _one_hot(_first_class_named(text)),
                          lambda image: _one_hot(pixels[_key(image)]))
    result = toy_zeroshot.toy_eval(perfect, small_toy.val, progress=False)
    assert result["n"] == 192 and result["n_held_out"] == 48 and result["n_seen"] == 144  # 3 per class
    assert result["top1_seen"] == result["top1_held_out"] == result["top1"] == 100.0
    assert result["colour_acc_held_out"] == result["shape_acc_held_out"] == 100.0
    assert result["robust_top1"] == 100.0 and result["val_loss"] is None  # a fake has no temperature
    # Captions of one class have equal features, so each image's nearest text is its class's first caption
    # in sorted order, and each caption's nearest image the first of its class in key order.
    ordered = sorted(val, key=lambda sample: sample[3])
    first_caption = {cls: min(c for _, c, k, _ in val if k == cls) for cls in range(64)}
    i2t = np.mean([caption == first_caption[cls] for _, caption, cls, _ in ordered]) * 100
    first_image_caption = {}
    for _, caption, cls, _ in ordered:
        first_image_caption.setdefault(cls, caption)
    unique = sorted({caption for _, caption, _, _ in val})
    t2i = np.mean([first_image_caption[_first_class_named(c)] == c for c in unique]) * 100
    assert result["i2t_r1"] == pytest.approx(i2t) and result["t2i_r1"] == pytest.approx(t2i)
    assert 0 < result["t2i_r1"] < 100  # duplicates and ties make both less than perfect, exactly so


def test_a_constant_encoder_answers_class_0_a_held_out_class(small_toy):
    constant = FakeEncoder(lambda text: [1.0], lambda image: [1.0])
    result = toy_zeroshot.toy_eval(constant, small_toy.val, progress=False)
    assert 0 in small_toy.held_out_classes  # "red circle": never trained
    assert result["top1_seen"] == 0.0
    assert result["top1_held_out"] == pytest.approx(100 / 16)  # balanced val: 1 of 16 held-out classes
    assert result["top1"] == pytest.approx(100 / 64)


def test_val_loss_is_open_clips_clip_loss_over_fixed_batches_of_64():
    b = toy_zeroshot.VAL_LOSS_BATCH
    assert b == 64  # a benchmark constant: it does not move with the recipe's batch
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(300, 16), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(300, 16), dim=-1)
    scale = 14.3
    expected = sum(float(ClipLoss()(images[s:s + b], texts[s:s + b], torch.tensor(scale))) * len(
        images[s:s + b]) for s in range(0, 300, b)) / 300
    assert toy_zeroshot.contrastive_loss(images, texts, scale) == pytest.approx(expected, abs=1e-6)


def test_a_model_encoder_gets_a_val_loss_at_the_clamped_temperature(small_toy):
    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny")
    encoder = ModelEncoder(model, "cpu")
    with torch.no_grad():
        model.logit_scale.fill_(math.log(200.0))
    assert toy_zeroshot.logit_scale_of(encoder) == 100.0
    result = toy_zeroshot.toy_eval(encoder, small_toy.val, limit=100, progress=False)
    assert result["n"] == 100 and math.isfinite(result["val_loss"]) and result["val_loss"] > 0
    assert result["top1_seen"] is not None and 0 <= result["i2t_r1"] <= 100
    line = toy_zeroshot.summary_line(result)
    assert line.startswith("toy zero-shot top-1 seen ") and "val loss" in line
