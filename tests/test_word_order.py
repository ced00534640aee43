"""benchmarks.word_order: the hard negatives are made right, and the scores of encoders whose answer is
known by construction are exactly what they must be (a bag of words: chance; one that reads order: 100)."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import word_order
from benchmarks.data import toy as toy_data
from benchmarks.data import toy_captions
from benchmarks.data import word_order_sets as sets
from benchmarks.data.captions import load_caption_folder
from benchmarks.data.files import InputError
from benchmarks.encoder import FakeEncoder


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_data.ensure_toy(tmp_path_factory.mktemp("toy"), num_train=8, num_val=96, shard_size=48,
                               progress=False)


def word_vector(word: str, dim: int = 64) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(dim)


def bag_of_words(text: str) -> np.ndarray:
    """Sum of word vectors: blind to order by construction."""
    return np.sum([word_vector(w) for w in text.lower().split()], axis=0)


def colour_image(image: torch.Tensor) -> np.ndarray:
    """64-d like the word vectors: the mean colour, then ones."""
    return np.concatenate([image.mean(dim=(1, 2)).numpy(), np.ones(61)])


def test_bag_of_words_encoder_scores_exactly_chance_on_every_toy_task(toy):
    encoder = FakeEncoder(bag_of_words, colour_image)
    result = word_order.word_order_eval(encoder, "toy", data=toy.val, sts_sentences=0, progress=False)
    assert set(result["tasks"]) == set(sets.TOY_TASKS)
    for task, row in result["tasks"].items():
        assert row["n"] >= 20, task
        assert row["top1"] == 50.0 and row["blind_top1"] == 50.0, (task, row)  # every pair is a tie
        assert row["chance"] == 50.0


def test_an_encoder_that_reads_order_scores_100(toy):
    """Image embedding = the embedding of its own true caption, text embedding = one vector per exact
    string: the true caption always wins, whatever its words."""
    def exact(text: str) -> np.ndarray:
        return word_vector("\0" + text, dim=256)

    truth: dict[bytes, str] = {}
    preprocess = FakeEncoder(exact, colour_image).preprocess
    for task in sets.TOY_TASKS:
        for item in sets.toy_items(task, toy.val):
            truth.setdefault(task, {})[preprocess(item.image()).numpy().tobytes()] = item.positive
    for task in sets.TOY_TASKS:
        encoder = FakeEncoder(exact, lambda image, t=task: exact(truth[t][image.numpy().tobytes()]))
        row = word_order.word_order_eval(encoder, "toy", [task], data=toy.val, sts_sentences=0,
                                         progress=False)["tasks"][task]
        assert row["top1"] == 100.0 and row["top1_ci95"] == [100.0, 100.0], task


def parse(template: str, caption: str) -> dict[str, str]:
    pattern = re.escape(template).replace(r"\{t\}", r"(?P<c>\w+) (?P<s>\w+)")
    pattern = pattern.replace(r"\{d\}", r"(?P<dc>\w+) (?P<ds>\w+)").replace(r"\{bg\}", r"(?P<bg>\w+)")
    match = re.fullmatch(pattern, caption)
    assert match, (template, caption)
    return match.groupdict()


def assert_toy_generator_could_write(template: str, caption: str) -> None:
    """The caption is `template` filled with values the toy generator itself could draw together."""
    values = parse(template, caption)
    colour, shape = values["c"], values["s"]
    assert colour in toy_data.COLOURS and shape in toy_data.SHAPES, caption
    if "dc" in values:
        assert values["dc"] in toy_data.COLOURS and values["ds"] in toy_data.SHAPES, caption
        assert values["dc"] != colour and values["ds"] != shape, caption
    if "bg" in values:
        bg = values["bg"]
        assert bg in toy_data.BACKGROUNDS and bg not in (colour, values.get("dc")), caption
        distance = math.dist(toy_data.BACKGROUNDS[bg], toy_data.COLOURS[colour])
        assert distance >= toy_data.MIN_BACKGROUND_DISTANCE, caption


def test_toy_negatives_are_valid_toy_captions_like_their_positives(toy):
    toy_templates = set(toy_captions.CAPTION_TEMPLATES)
    for task, template in sets.TOY_TASK_TEMPLATES.items():
        assert template in toy_templates, task
        items = sets.toy_items(task, toy.val)
        assert items, task
        for item in items:
            for caption in (item.positive, item.negative):
                assert_toy_generator_could_write(template, caption)
            assert item.negative != item.positive
            assert sorted(item.negative.split()) == sorted(item.positive.split())  # same words, other binding


def test_no_negative_equals_its_caption_and_shuffles_keep_the_words(toy, shared_data):
    coco = load_caption_folder(shared_data / "captions")
    for task in sets.CAPTION_TASKS:
        items = sets.caption_items(coco, task)
        assert len(items) >= 20, task
        for item in items:
            assert item.negative != item.positive
            words = re.findall(r"[a-z]+", item.positive.lower())
            assert sorted(re.findall(r"[a-z]+", item.negative.lower())) == sorted(words)
    for item in sets.toy_items("shuffle", toy.val):
        assert item.negative != item.positive
        assert sorted(item.negative.split()) == sorted(item.positive.split())


def test_caption_rules_exchange_whole_words_and_keep_case():
    assert sets.caption_negative("swap-object", "A man walks a dog past a woman.", "k") == \
        "A dog walks a man past a woman."
    assert sets.caption_negative("swap-attribute", "Red bus, white car", "k") == "White bus, red car"
    assert sets.caption_negative("swap-attribute", "a redwood near a red barn", "k") is None  # 1 colour
    assert sets.shuffle_words("the the the", 0) is None


def test_bag_of_words_score_is_100_for_a_bag_and_lower_for_an_order_reader():
    sentences = ["a man is playing a guitar", "two dogs run across the green field", "the cat sleeps"]
    assert word_order.bag_of_words_score(FakeEncoder(bag_of_words), sentences)["bag_of_words_score"] == \
        pytest.approx(100.0, abs=1e-4)
    order = word_order.bag_of_words_score(FakeEncoder(lambda t: word_vector("\0" + t)), sentences)
    assert order["bag_of_words_score"] < 60 and order["n"] == 3


def test_sugarcrepe_format_and_one_line_errors(tmp_path):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.jpg")
    table = {"0": {"filename": "a.jpg", "caption": "a red square", "negative_caption": "a square red"}}
    (tmp_path / "swap_att.json").write_text(json.dumps(table))
    items = sets.sugarcrepe_items(tmp_path / "swap_att.json", tmp_path)
    assert [(i.key, i.positive, i.negative) for i in items] == [("0", "a red square", "a square red")]
    assert items[0].image().size == (8, 8)
    (tmp_path / "bad.json").write_text(json.dumps({"0": {"filename": "a.jpg"}}))
    with pytest.raises(InputError, match="lacks filename, caption or negative_caption"):
        sets.sugarcrepe_items(tmp_path / "bad.json", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        word_order.main(["--model", "mixer-tiny", "--dataset", "sugarcrepe", "--data",
                         str(tmp_path / "bad.json"), "--images", str(tmp_path), "--no-save",
                         "--sts-sentences", "0"])
    assert exit_info.value.code == 2


def test_cli_scores_a_tiny_model_and_writes_the_result(toy, tmp_path, capsys):
    record = word_order.main(["--model", "transformer+mixer-tiny", "--data", toy.val, "--limit", "8",
                              "--tasks", "swap-object", "shuffle", "--sts-sentences", "16",
                              "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "swap-object" in out and "bag-of-words score" in out
    # the name carries what differs from the default measurement: data, tasks, STS sentences, limit
    (path,) = (tmp_path / "word_order").glob("*.json")
    assert path.name.startswith("transformer+mixer-tiny-random__") and path.name.endswith(
        "__tasks-swap-object+shuffle__sts16__limit8.json")
    written = json.loads(path.read_text())
    assert written["metrics"]["tasks"]["shuffle"]["n"] == 8 and set(written["metrics"]["tasks"]) == {
        "swap-object", "shuffle"}
    assert 0 <= written["metrics"]["text_only"]["bag_of_words_score"] <= 100
    assert record["benchmark"] == "word_order"
