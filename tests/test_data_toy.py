"""benchmarks.data.toy: deterministic generation (independent of the process count), cache reuse
after the manifest check, regeneration of missing/corrupt/half-written sets, and the content
(class-consistent captions and attributes, balanced val classes, distinct shapes under rotation); the
variants: a seed's shifted held-out square and the hard task (smaller targets, more distractors)."""

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
from benchmarks.data import toy_captions, toy_drawing, toy_scene
from benchmarks.data.shards import SkipCounts, expand_shards, iter_samples, iter_shard

SMALL = {"num_train": 150, "num_val": 128, "shard_size": 64}
# Version 5's held-out classes, those every committed run was trained without: colour i, shapes i and i + 3.
SEED_0_HELD_OUT = (0, 3, 9, 12, 18, 21, 27, 30, 36, 39, 40, 45, 49, 54, 58, 63)


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
    assert held_out == set(toy.held_out_classes) == set(SEED_0_HELD_OUT) and len(held_out) == 16
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
    toy_data.main(["--out", str(tmp_path), "--seed", "1", "--task", "hard", "--num-train", "8",
                   "--num-val", "64", "--shard-size", "64"])
    out = capsys.readouterr().out
    assert "toy-1-hard-v5-8x64s64" in out and "task hard; held-out classes: red square, red cross, " in out
    for bad in (["--seed", "-1"], ["--task", "easy"]):
        with pytest.raises(SystemExit) as info:
            toy_data.main(["--out", str(tmp_path), *bad])
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


def _assert_held_out_design(toy, metas: list[dict]) -> None:
    held_out = {toy_data.CLASS_NAMES[i] for i in toy.held_out_classes}
    assert len(held_out) == 16  # a quarter of the 64 classes
    for name in ("colour", "shape"):  # each colour and each shape: held out twice, trained six times
        per_value = Counter(toy_data.CLASS_ATTRIBUTES[i][name] for i in toy.held_out_classes)
        assert set(per_value.values()) == {2} and len(per_value) == 8
    targets = [toy_data.CLASS_NAMES[m["class"]] for m in metas]
    distractors = [f"{d['colour']} {d['shape']}" for m in metas
                   for d in m.get("distractors", [m["distractor"]])]
    assert not held_out & set(targets) and not held_out & set(distractors)
    assert not any(name in m["caption"] for m in metas for name in held_out)
    # class-balanced over the 48 seen classes: consecutive samples cycle through them
    assert [m["class"] for m in metas[:48]] == list(toy.seen_classes)
    counts = SkipCounts()
    val_classes = [s.cls for s in iter_samples(expand_shards(toy.val), counts, with_class=True)]
    assert set(val_classes) >= set(toy.held_out_classes)  # val scores them


def test_held_out_combinations_never_reach_training_but_every_colour_and_shape_does(toy):
    _assert_held_out_design(toy, _train_metas(toy))


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


# ---------------------------------------------------------------- the variants: seed and task

# Version 5's seed-0 set of SMALL sizes as the generator wrote it before the variants existed (Pillow 13.0.0):
# the manifest's sha256 (every JPEG byte) and a digest of every sample's caption and attributes.
SEED_0_MANIFEST_SHA256 = "332b614d5ce645086e9d108787d6cdb782239d7ae6c61d5e015748e907d10fd6"
SEED_0_TEXT_SHA256 = "01aa37717cad7f92cec13c81408302c74541d527cc543a480cf3a0b102731c74"


def test_seed_0_standard_is_byte_identical_to_version_5_before_the_variants(toy):
    import hashlib

    import PIL

    text = hashlib.sha256()
    for url in expand_shards(toy.train) + expand_shards(toy.val):
        for raw in iter_shard(url, SkipCounts()):
            text.update(raw["json"])
            text.update(raw["txt"])
    assert text.hexdigest() == SEED_0_TEXT_SHA256  # independent of the JPEG library
    if PIL.__version__ == "13.0.0":  # JPEG bytes: the same on the same Pillow/libjpeg build
        assert toy.manifest_sha256 == SEED_0_MANIFEST_SHA256
    manifest = json.loads((toy.root / "manifest.json").read_text())
    assert "task" not in manifest and toy.task == "standard" and toy.root.name == "toy-0-v5-150x128s64"
    assert toy_data.read_toy_set(toy.root) == {"seed": 0, "task": "standard",
                                               "held_out_classes": SEED_0_HELD_OUT,
                                               "manifest_sha256": toy.manifest_sha256}


@pytest.mark.parametrize("seed", range(8))
def test_each_seed_shifts_the_held_out_square_and_keeps_its_design(seed):
    held_out = toy_scene.held_out_classes(seed)
    assert held_out == tuple(sorted(c * 8 + (c + seed + k) % 8 for c in range(8) for k in (0, 3)))
    assert toy_scene.held_out_classes(seed + 8) == held_out  # the square repeats every 8 seeds
    others = {toy_scene.held_out_classes(s) for s in range(8) if s != seed}
    assert held_out not in others and len(others) == 7
    for name in ("colour", "shape"):  # each colour and each shape: held out twice, trained six times
        per_value = Counter(toy_data.CLASS_ATTRIBUTES[i][name] for i in held_out)
        assert set(per_value.values()) == {2} and len(per_value) == 8
    excluded = toy_scene.held_out_pairs(held_out)
    names = [toy_data.CLASS_NAMES[i] for i in held_out]
    rng = random.Random(seed)
    for task in ("standard", "hard"):
        for class_index in toy_scene.seen_classes(held_out) * 3:
            _, caption, meta = toy_scene.make_sample(rng, class_index, excluded, task)
            drawn = [(d["colour"], d["shape"]) for d in meta.get("distractors", [meta["distractor"]])]
            assert not excluded & set(drawn) and not any(name in caption for name in names)


def test_seed_1_set_holds_out_its_own_square_and_records_it(tmp_path):
    shifted = small_toy(tmp_path, seed=1, num_train=96, num_val=64)
    assert shifted.root.name == "toy-1-v5-96x64s64"
    assert shifted.held_out_classes == tuple(sorted(c * 8 + (c + 1 + k) % 8
                                                    for c in range(8) for k in (0, 3)))
    assert not set(shifted.held_out_classes) & set(SEED_0_HELD_OUT)  # a shift moves every class of the square
    recorded = toy_data.read_toy_set(shifted.root)
    assert (recorded["seed"], recorded["task"], recorded["held_out_classes"]) == (1, "standard",
                                                                                  shifted.held_out_classes)
    _assert_held_out_design(shifted, _train_metas(shifted))


def _target_pixels(meta: dict) -> int:
    """The target's area in pixels of the 64 px image, redrawn alone from its attributes."""
    side = toy_scene.IMAGE_SIZE * toy_scene.SUPERSAMPLE
    img = Image.new("RGB", (side, side), (0, 0, 0))
    x, y = meta["center"]
    toy_drawing.draw_object(img, meta["shape"], (255, 255, 255), x * side, y * side, meta["radius"] * side,
                            math.radians(meta["rotation_deg"]))
    return int((np.asarray(img.reduce(toy_scene.SUPERSAMPLE))[:, :, 0] > 127).sum())


def test_the_hard_task_has_smaller_targets_among_more_distractors(toy, tmp_path):
    hard = small_toy(tmp_path, seed=0, task="hard", num_train=480, num_val=128)
    assert hard.root.name == "toy-0-hard-v5-480x128s64" and hard.task == "hard"
    assert json.loads((hard.root / "manifest.json").read_text())["task"] == "hard"
    assert toy_data.read_toy_set(hard.root)["task"] == "hard" and hard.held_out_classes == SEED_0_HELD_OUT
    counts = SkipCounts()
    metas = {name: [json.loads(raw["json"]) for url in expand_shards(t.val)
                    for raw in iter_shard(url, counts)] for name, t in (("standard", toy), ("hard", hard))}
    areas = {name: np.median([_target_pixels(m) for m in ms]) for name, ms in metas.items()}
    assert areas["hard"] < 0.35 * areas["standard"], areas  # half the radius: about a quarter of the area
    assert all(len(m.get("distractors", [m["distractor"]])) == 1 for m in metas["standard"])
    numbers = [len(m["distractors"]) for m in metas["hard"]]
    assert set(numbers) == {3, 4, 5} and np.mean(numbers) > 3.5
    for m in metas["hard"]:  # nearly the target's size, never larger; one colour each
        assert all(d["radius"] < m["radius"] for d in m["distractors"])
        assert len({d["colour"] for d in m["distractors"]} | {m["colour"]}) == len(m["distractors"]) + 1
    sizes = [d["radius"] / m["radius"] for m in metas["hard"] for d in m["distractors"]]
    assert np.median(sizes) > 0.6 and np.median([m["distractor"]["radius"] for m in metas["standard"]]) < 0.1
    _assert_held_out_design(hard, _train_metas(hard))
    # the captions' vocabulary is unchanged: every zero-shot prompt token is one of its train captions' tokens
    import towers

    captions = [m["caption"] for m in _train_metas(hard)]
    trained = set(towers.tokenize(captions, context_length=77).unique().tolist())
    prompts = [t.format(name) for t in toy_data.TOY_TEMPLATES for name in toy_data.CLASS_NAMES]
    assert set(towers.tokenize(prompts, context_length=77).unique().tolist()) <= trained


def test_a_set_without_its_classes_file_is_not_read(toy, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(toy.root, copy)
    (copy / "classes.tsv").write_text((copy / "classes.tsv").read_text().replace("held-out", "seen"))
    with pytest.raises(ValueError, match="classes.tsv: its sha256"):
        toy_data.read_toy_set(copy)
    with pytest.raises(ValueError, match="manifest.json: not a toy set's manifest"):
        toy_data.read_toy_set(tmp_path)
