"""benchmarks.data.toy: deterministic generation (independent of the process count), cache reuse
after the manifest check, regeneration of missing/corrupt/half-written sets, and the content
(class-consistent captions and attributes, balanced val classes, distinct shapes under rotation)."""

from __future__ import annotations

import io
import json
import math
import os
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.data import toy as toy_data
from benchmarks.data import toy_captions, toy_drawing
from benchmarks.data.shards import SkipCounts, expand_shards, iter_samples, iter_shard

SMALL = {"num_train": 150, "num_val": 128, "shard_size": 64}


def small_toy(cache: Path, seed: int = 0, **kw) -> toy_data.ToyData:
    return toy_data.ensure_toy(cache, seed, **{**SMALL, "progress": False, **kw})


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> toy_data.ToyData:
    return small_toy(tmp_path_factory.mktemp("toy"))


def test_same_seed_same_manifest_whatever_the_process_count(toy, tmp_path):
    again = small_toy(tmp_path / "b", processes=1)
    assert again.manifest_sha256 == toy.manifest_sha256
    shard = Path("train") / "00001.tar"
    assert (again.root / shard).read_bytes() == (toy.root / shard).read_bytes()
    assert small_toy(tmp_path / "c", seed=1).manifest_sha256 != toy.manifest_sha256


def test_layout_and_sizes(toy):
    assert toy.root.name == f"toy-0-v{toy_data.VERSION}-150x128s64"
    assert expand_shards(toy.train) == [str(toy.root / "train" / f"{i:05d}.tar") for i in range(3)]
    assert len(expand_shards(toy.val)) == 2
    counts = SkipCounts()
    train = list(iter_samples(expand_shards(toy.train), counts))
    val = list(iter_samples(expand_shards(toy.val), counts, with_class=True))
    assert (len(train), len(val)) == (150, 128) and sum(counts.values()) == 0
    assert train[0].key == "0000000" and train[-1].key == "0000221"  # img2dataset keys: shard, index
    raw = next(iter_shard(expand_shards(toy.val)[0], counts))
    assert sorted(k for k in raw if not k.startswith("__")) == ["cls", "jpg", "json", "txt"]
    assert all(s.image.size == (64, 64) and s.image.mode == "RGB" for s in val)
    assert Counter(s.cls for s in val) == Counter({c: 2 for c in range(64)})  # class-balanced
    lines = toy.classes_file.read_text().splitlines()
    assert lines[0] == "index\tname\tcolour\tshape\tsplit" and len(lines) == 65
    assert lines[1:3] == ["0\tred circle\tred\tcircle\theld-out", "1\tred square\tred\tsquare\tseen"]
    held_out = {i for i, line in enumerate(lines[1:]) if line.endswith("held-out")}
    assert held_out == set(toy_data.HELD_OUT_CLASSES) and len(held_out) == 16
    assert len(toy_data.CLASS_NAMES) == 64 and toy.class_names == toy_data.CLASS_NAMES


def test_captions_always_name_target_colour_and_shape(toy):
    counts = SkipCounts()
    forms = set()
    for url in expand_shards(toy.train) + expand_shards(toy.val):
        for raw in iter_shard(url, counts):
            meta = json.loads(raw["json"])
            caption = raw["txt"].decode()
            target = f"{meta['colour']} {meta['shape']}"
            assert toy_data.CLASS_NAMES[meta["class"]] == target and meta["caption"] == caption
            assert target in caption
            d = meta["distractor"]
            assert d["colour"] != meta["colour"] and d["shape"] != meta["shape"]
            assert meta["background"] not in (meta["colour"], d["colour"])
            if f"{d['colour']} {d['shape']}" in caption:  # distractor: secondary, after the target
                assert caption.index(target) < caption.index(f"{d['colour']} {d['shape']}")
            if "cls" in raw:
                assert int(raw["cls"]) == meta["class"]
            forms.add(caption.replace(target, "T").replace(meta["background"], "B"))
    assert len(forms) >= 30  # many templates, not one fixed sentence


def test_target_outweighs_the_distractor(toy):
    """In every image more pixels have the target's colour than the distractor's: the distractor is
    the secondary object."""
    counts = SkipCounts()
    for url in expand_shards(toy.val):
        for raw in iter_shard(url, counts):
            meta = json.loads(raw["json"])
            pixels = np.asarray(Image.open(io.BytesIO(raw["jpg"])).convert("RGB")).reshape(-1, 1, 3)
            distance = np.linalg.norm(pixels.astype(int) - np.array(list(toy_data.COLOURS.values())), axis=2)
            near = dict(zip(toy_data.COLOURS, (distance < 45).sum(axis=0), strict=True))
            assert near[meta["colour"]] > 2 * near[meta["distractor"]["colour"]], meta


def test_shapes_stay_distinct_under_rotation():
    """Max IoU between shape A (rotation 0) and shape B (any of 72 rotations) at equal size: no pair
    of classes collapses under rotation (square vs diamond would give IoU 1)."""
    def mask(shape: str, rotation: float) -> np.ndarray:
        img = Image.new("RGB", (128, 128), (0, 0, 0))
        toy_drawing.draw_object(img, shape, (255, 255, 255), 64, 64, 50, rotation)
        return np.asarray(img)[:, :, 0] > 127

    rotations = [2 * math.pi * k / 72 for k in range(72)]
    masks = {s: [mask(s, r) for r in rotations] for s in toy_data.SHAPES}
    for a in toy_data.SHAPES:
        for b in toy_data.SHAPES:
            if a == b:
                continue
            best = max((masks[a][0] & m).sum() / (masks[a][0] | m).sum() for m in masks[b])
            assert best < 0.8, (a, b, best)


def test_cache_is_reused_without_regenerating(toy, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("regenerated an intact cache")

    monkeypatch.setattr(toy_data, "_generate", fail)
    assert small_toy(toy.root.parent).manifest_sha256 == toy.manifest_sha256


@pytest.mark.parametrize("damage", ["flip_byte", "delete_shard", "delete_manifest", "truncate"])
def test_corrupt_or_missing_cache_is_regenerated(tmp_path, damage):
    first = small_toy(tmp_path)
    shard = first.root / "val" / "00001.tar"
    original = shard.read_bytes()
    if damage == "flip_byte":
        data = bytearray(original)
        data[5000] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "delete_shard":
        shard.unlink()
    elif damage == "delete_manifest":
        (first.root / "manifest.json").unlink()
    else:
        shard.write_bytes(original[:1000])
    again = small_toy(tmp_path)
    assert again.manifest_sha256 == first.manifest_sha256 and shard.read_bytes() == original


def test_killed_generation_leaves_no_set_that_passes(tmp_path, monkeypatch):
    real = toy_data._write_shard
    calls = []

    def dies_after_two(task):  # runs in-process (processes=1 still uses a pool: patch the mapper)
        calls.append(task)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(task)

    class SerialPool:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, tasks):
            return map(fn, tasks)

    monkeypatch.setattr(toy_data, "ProcessPoolExecutor", SerialPool)
    monkeypatch.setattr(toy_data, "_write_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        small_toy(tmp_path)
    assert not any(tmp_path.glob("toy-*")) and not any(tmp_path.glob(".toy-*.tmp-*"))
    monkeypatch.setattr(toy_data, "_write_shard", real)
    # A SIGKILLed run leaves its temporary folder behind: an old one is cleaned up, and never used.
    stale = tmp_path / f".{toy_data._folder_name(0, 150, 128, 64)}.tmp-deadbeef"
    (stale / "train").mkdir(parents=True)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert small_toy(tmp_path).manifest_sha256 == small_toy(tmp_path / "ref").manifest_sha256
    assert not stale.exists()


def test_cli_prints_the_patterns(tmp_path, capsys):
    toy_data.main(["--out", str(tmp_path), "--num-train", "64", "--num-val", "64", "--shard-size", "32"])
    out = capsys.readouterr().out
    assert "64 train, 64 val" in out and str(tmp_path / "toy-0-v") in out and "{00000..00001}.tar" in out
    with pytest.raises(SystemExit) as info:
        toy_data.main(["--out", str(tmp_path), "--num-train", "0"])
    assert info.value.code == 2


def test_caption_kinds_come_in_their_weights_and_the_distractor_always_second():
    """2 in 7 captions name the distractor (always after the target), 2 in 7 + 2/49 the background."""
    rng = random.Random(0)
    captions = [toy_captions.write_caption(rng, "red", "circle", 0.3, (0.2, 0.5), "blue", "green", "star")
                for _ in range(14_000)]
    with_distractor = [c for c in captions if "green star" in c]
    assert abs(len(with_distractor) / len(captions) - 2 / 7) < 0.015
    assert all(c.index("red circle") < c.index("green star") for c in with_distractor)
    assert abs(sum("blue" in c for c in captions) / len(captions) - (2 / 7 + 2 / 49)) < 0.015
    assert all("red circle" in c for c in captions)


def _train_metas(toy) -> list[dict]:
    counts = SkipCounts()
    return [json.loads(raw["json"]) for url in expand_shards(toy.train) for raw in iter_shard(url, counts)]


def test_held_out_combinations_never_reach_training_but_every_colour_and_shape_does(toy):
    held_out = {toy_data.CLASS_NAMES[i] for i in toy_data.HELD_OUT_CLASSES}
    assert len(held_out) == 16  # a quarter of the 64 classes
    for name in ("colour", "shape"):  # each colour and each shape: held out twice, trained six times
        per_value = Counter(toy_data.CLASS_ATTRIBUTES[i][name] for i in toy_data.HELD_OUT_CLASSES)
        assert set(per_value.values()) == {2} and len(per_value) == 8
    metas = _train_metas(toy)
    targets = [toy_data.CLASS_NAMES[m["class"]] for m in metas]
    distractors = [f"{m['distractor']['colour']} {m['distractor']['shape']}" for m in metas]
    assert not held_out & set(targets) and not held_out & set(distractors)
    assert not any(name in m["caption"] for m in metas for name in held_out)
    # class-balanced over the 48 seen classes: consecutive samples cycle through them
    assert [m["class"] for m in metas[:48]] == list(toy_data.SEEN_CLASSES)
    counts = SkipCounts()
    val_classes = [s.cls for s in iter_samples(expand_shards(toy.val), counts, with_class=True)]
    assert set(val_classes) >= set(toy_data.HELD_OUT_CLASSES)  # val scores them


def test_every_zero_shot_prompt_token_is_a_trained_token():
    """Built from the default toy set's train split: a prompt token no training caption has would be an
    untrained embedding, different for every seed (version 4's final "." and "plain")."""
    import towers

    toy = toy_data.ensure_toy(progress=False)
    counts = SkipCounts()
    captions = [raw["txt"].decode() for url in expand_shards(toy.train) for raw in iter_shard(url, counts)]
    caption_ids = towers.tokenize(captions, context_length=77)
    trained = set(caption_ids.unique().tolist())
    prompts = [t.format(name) for t in toy_data.TOY_TEMPLATES for name in toy_data.CLASS_NAMES]
    prompt_ids = towers.tokenize(prompts, context_length=77)
    assert set(prompt_ids.unique().tolist()) <= trained, sorted(set(prompt_ids.unique().tolist()) - trained)
    # and the toy recipe's context cuts none of them (SOT and EOT included)
    from launch.config import TOY_CONTEXT_LENGTH
    longest = max(int((ids != 0).sum(1).max()) for ids in (caption_ids, prompt_ids))
    assert longest <= TOY_CONTEXT_LENGTH, (longest, TOY_CONTEXT_LENGTH)
    robust = [t.format(name) for t in toy_data.TOY_ROBUSTNESS_TEMPLATES for name in toy_data.CLASS_NAMES]
    untrained = set(towers.tokenize(robust, context_length=77).unique().tolist()) - trained
    assert towers.tokenize(["."], context_length=77)[0, 1].item() in untrained  # the test can fail
