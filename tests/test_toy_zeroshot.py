"""benchmarks.toy_zeroshot: seen / held-out top-1, R@1 with merged duplicate captions and the val loss,
each against a fake encoder whose exact score is known or against open_clip's own loss; the held-out
classes of the scored set's own seed, in the runner and in a 2-step training run on seed 1, hard task."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

import towers
from benchmarks import toy_zeroshot
from benchmarks.data import toy as toy_data
from benchmarks.data.files import InputError
from benchmarks.data.shards import eval_loader
from benchmarks.encoder import FakeEncoder, ModelEncoder
from benchmarks.evaluations import EVALUATIONS


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


# ---------------------------------------------------------------- the variants: another seed, the hard task


@pytest.fixture(scope="module")
def seed_1_toy(tmp_path_factory):
    return toy_data.ensure_toy(tmp_path_factory.mktemp("toy1"), 1, num_train=8, num_val=192, shard_size=64,
                               progress=False)


def test_a_seed_1_set_is_scored_with_its_own_held_out_classes(seed_1_toy):
    """Class 0 (red circle) is held out in seed 0's square and seen in seed 1's: an encoder that always
    answers class 0 scores on the seen classes of seed 1, and nothing on its held-out ones."""
    assert 0 not in seed_1_toy.held_out_classes
    constant = FakeEncoder(lambda text: [1.0], lambda image: [1.0])
    result = toy_zeroshot.toy_eval(constant, seed_1_toy.val, progress=False)
    assert result["held_out_classes"] == list(toy_data.held_out_classes(1)) and result["toy_seed"] == 1
    assert result["toy_task"] == "standard" and result["toy_manifest_sha256"] == seed_1_toy.manifest_sha256
    assert result["top1_seen"] == pytest.approx(100 / 48) and result["top1_held_out"] == 0.0
    with pytest.raises(InputError, match="the toy set of seed 1, not of the seed 0 asked for"):
        toy_zeroshot.toy_eval(constant, seed_1_toy.val, toy_seed=0, progress=False)


def _fake_run(folder: Path, recipe: dict) -> Path:
    from launch.checkpointing import save_checkpoint

    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny", image_overrides={"layers": 1}, text_overrides={"layers": 1})
    save_checkpoint(folder / "checkpoints", 2, {"model_config": model.model_config,
                                                "state_dict": model.state_dict(), "step": 2})
    (folder / "config.json").write_text(json.dumps({"name": folder.name, "experiment": {"recipe": recipe}}))
    return folder


def test_the_runner_scores_a_run_on_the_toy_set_its_recipe_names(tmp_path, small_toy, seed_1_toy, capsys):
    from benchmarks import imagenet_zeroshot as zs

    run = _fake_run(tmp_path / "run", {"seed": 0, "toy_seed": 1, "toy_task": "standard"})
    common = ["--dataset", "toy", "--limit", "8", "--results-dir", str(tmp_path / "scores")]
    record = zs.main(["--model", str(run), "--data", seed_1_toy.val, *common])
    assert record["metrics"]["toy_seed"] == 1
    assert record["metrics"]["held_out_classes"] == list(toy_data.held_out_classes(1))
    refusals = [  # (argv, what the one-line error names)
        (["--model", str(run), "--data", small_toy.val], "the toy set of seed 0, not of the seed 1"),
        (["--model", str(run), "--data", seed_1_toy.val, "--toy-seed", "2"], "--toy-seed 2: --model"),
        (["--model", "mixer-tiny", "--data", seed_1_toy.val, "--toy-seed", "0"], "the toy set of seed 1"),
        (["--model", "mixer-tiny", "--data", seed_1_toy.val, "--toy-task", "hard"], "the toy set of task"),
    ]
    for argv, message in refusals:
        with pytest.raises(SystemExit) as info:
            zs.main(argv + common)
        assert info.value.code == 2 and message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit) as info:
        zs.main(["--model", "mixer-tiny", "--toy-seed", "1", "--data", str(tmp_path)])
    assert info.value.code == 2 and "with --dataset toy" in capsys.readouterr().err
    # a model without a run: the flags name the set; a run from before the fields: seed 0, standard
    record = zs.main(["--model", "mixer-tiny", "--data", seed_1_toy.val, "--toy-seed", "1", *common])
    assert record["metrics"]["toy_seed"] == 1
    old = _fake_run(tmp_path / "old", {"seed": 0})
    assert toy_zeroshot.run_toy_set(str(old)) == (0, "standard")
    assert toy_zeroshot.run_toy_set(str(old / "checkpoints" / "step_00000002.pt")) == (0, "standard")
    assert toy_zeroshot.run_toy_set("mixer-tiny") is None


def test_a_two_step_run_on_seed_1_hard_trains_and_scores_that_set(tmp_path, monkeypatch):
    from launch import data as launch_data
    from launch import train

    asked = []

    def small(**kwargs):  # the set the run asks for, at test size
        asked.append((kwargs["seed"], kwargs["task"]))
        return toy_data.ensure_toy(tmp_path / "cache", **kwargs, num_train=64, num_val=64, shard_size=32,
                                   progress=False)

    monkeypatch.setattr(launch_data, "ensure_toy", small)
    scored = []
    real = toy_zeroshot.toy_eval
    monkeypatch.setattr(EVALUATIONS["toy"], "scorer",
                        lambda *a, **k: scored.append(real(*a, **k)) or scored[-1])
    argv = ["--tower", "mixer", "--steps", "2", "--toy-seed", "1", "--toy-task", "hard", "--batch-size", "16",
            "--eval-samples", "64", "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "run"]
    assert train.main(argv) == 0
    assert set(asked) == {(1, "hard")}  # the train split and the val split of that one set
    config = json.loads((tmp_path / "runs" / "run" / "config.json").read_text())
    assert config["recipe_identity"]["train_data"] == {"toy_seed": 1, "toy_task": "hard",
                                                       "toy_version": toy_data.VERSION}
    recipe = config["experiment"]["recipe"]
    assert (recipe["toy_seed"], recipe["toy_task"]) == (1, "hard")
    assert scored and all(r["held_out_classes"] == list(toy_data.held_out_classes(1)) for r in scored)
    assert {(r["toy_seed"], r["toy_task"], r["n"]) for r in scored} == {(1, "hard", 64)}
    assert toy_zeroshot.run_toy_set(str(tmp_path / "runs" / "run")) == (1, "hard")
