"""Word-order and attribute-binding items: an image, its true caption and a hard negative made from it.

    items = toy_items("swap-attribute")          # from each toy val image's own attributes
    items = caption_items(load_caption_folder(shared_data_dir() / "captions"), "swap-object")
    items = sugarcrepe_items("swap_att.json", "val2017/")   # SugarCrepe's published format
    shuffle_words("a red circle next to a blue square", seed=3)

Toy tasks (each negative is a caption the toy generator itself could write, so a text-only model has
nothing to go on): swap-attribute exchanges the target's and the distractor's colours, swap-background
the target's and the background's colours (images on an object-coloured background only), swap-object
the two shapes; shuffle permutes the words of the image's own caption (ARO's order task). Caption
tasks apply the same ideas by rule: exchange two colour words, or two nouns from NOUNS, or shuffle.
Every item has exactly one negative, so chance is 50%.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.data import toy as toy_data
from benchmarks.data.captions import CaptionedImages
from benchmarks.data.files import InputError
from benchmarks.data.shards import SkipCounts, decode_sample, expand_shards, iter_shard
from runfolder.vocabulary import WORD_ORDER_TASKS as TOY_TASKS  # the report names them too

CAPTION_TASKS = ("swap-attribute", "swap-object", "shuffle")
# The toy templates each swap task writes its pair with (both are toy_captions.CAPTION_TEMPLATES entries).
TOY_TASK_TEMPLATES = {
    "swap-attribute": "a {t} next to a little {d}",
    "swap-background": "a {t} on a {bg} background",
    "swap-object": "a {t} next to a little {d}",
}
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "pink", "brown", "orange", "black", "white",
                "gray", "grey", "silver", "gold")
NOUNS = ("man", "woman", "person", "people", "boy", "girl", "child", "dog", "cat", "horse", "bird", "table",
         "chair", "car", "bus", "train", "plate", "bowl", "cake", "pizza", "bed", "street", "road", "field",
         "water", "tree", "grass", "phone", "laptop", "window", "wall", "kitchen", "room", "sign", "truck")
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Item:
    """One image with its true caption and one negative; `image` opens the picture (None: text-only)."""

    key: str
    positive: str
    negative: str
    image: Callable[[], Image.Image] | None


def shuffle_words(text: str, seed: int | str) -> str | None:
    """The words of `text` in another order (deterministic in `seed`); None when no order differs."""
    words = text.split()
    if len(set(words)) < 2:
        return None
    rng = random.Random(f"mixclip-shuffle/{seed}")
    for _ in range(100):
        order = words[:]
        rng.shuffle(order)
        if order != words:
            return " ".join(order)
    return None


def _exchange(text: str, first: str, second: str) -> str:
    """`text` with the first whole-word occurrences of `first` and `second` exchanged (the words keep
    their count, and each place keeps its capitalisation)."""
    spans = [re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE).span() for word in (first, second)]
    (a, b), (c, d) = sorted(spans)

    def cased(word: str, like: str) -> str:
        return word.capitalize() if like[0].isupper() else word

    left, right = text[a:b], text[c:d]
    return text[:a] + cased(right.lower(), left) + text[b:c] + cased(left.lower(), right) + text[d:]


def toy_negative(task: str, attributes: dict, caption: str, key: str) -> tuple[str, str] | None:
    """(positive, negative) for one toy val image, or None when the task does not apply to it."""
    colour, shape, background = attributes["colour"], attributes["shape"], attributes["background"]
    d_colour, d_shape = attributes["distractor"]["colour"], attributes["distractor"]["shape"]
    if task == "shuffle":
        negative = shuffle_words(caption, key)
        return None if negative is None else (caption, negative)
    true = (colour, shape, d_colour, d_shape, background)
    if task == "swap-attribute":
        swapped = (d_colour, shape, colour, d_shape, background)
    elif task == "swap-object":
        swapped = (colour, d_shape, d_colour, shape, background)
    elif task == "swap-background":
        if background not in toy_data.COLOURS:  # "a white circle" is no toy caption: skip the image
            return None
        swapped = (background, shape, d_colour, d_shape, colour)
    else:
        raise InputError(f"--tasks {task}: expected one of {', '.join(TOY_TASKS)}")
    template = TOY_TASK_TEMPLATES[task]
    positive, negative = (template.format(t=f"{c} {s}", d=f"{dc} {ds}", bg=bg)
                          for c, s, dc, ds, bg in (true, swapped))
    return positive, negative


def toy_items(task: str, data: str | None = None, limit: int | None = None) -> list[Item]:
    """Items of a toy task from the val split (`data`: toy cache root or val shard pattern); by default the
    default set (seed 0, standard) whatever toy set a run trained on: the same items for every run, so the
    scores compare."""
    val = data if data is not None and ".tar" in data else toy_data.ensure_toy(data).val
    counts = SkipCounts()
    items: list[Item] = []
    for url in expand_shards(val):
        for raw in iter_shard(url, counts):
            sample = decode_sample(raw, counts)
            if sample is None or "json" not in raw:
                continue
            pair = toy_negative(task, json.loads(raw["json"]), sample.caption, sample.key)
            if pair is not None:
                items.append(Item(sample.key, *pair, image=lambda image=sample.image: image))
            if limit is not None and len(items) >= limit:
                return items
    return items


def caption_negative(task: str, caption: str, key: str) -> str | None:
    """A rule-made negative of a real caption, or None when the rule does not apply to it."""
    if task == "shuffle":
        return shuffle_words(caption, key)
    vocabulary = {"swap-attribute": COLOUR_WORDS, "swap-object": NOUNS}.get(task)
    if vocabulary is None:
        raise InputError(f"--tasks {task}: expected one of {', '.join(CAPTION_TASKS)} for captions")
    found: list[str] = []
    for word in _WORD.findall(caption):
        if word.lower() in vocabulary and word.lower() not in found:
            found.append(word.lower())
    if len(found) < 2:
        return None
    return _exchange(caption, found[0], found[1])


def caption_items(data: CaptionedImages, task: str) -> list[Item]:
    """Items of a rule-made task over every caption of a captioned folder where the rule applies."""
    items = []
    for index, (caption, image) in enumerate(zip(data.captions, data.caption_image, strict=True)):
        negative = caption_negative(task, caption, f"{data.name}/{index}")
        if negative is not None and negative != caption:
            items.append(Item(f"{data.image_ids[image]}#{index}", caption, negative,
                              image=lambda image=image: data.open_image(image)))
    return items


def sugarcrepe_items(json_file: str | Path, image_dir: str | Path) -> list[Item]:
    """SugarCrepe's published format: {id: {"filename", "caption", "negative_caption"}} + image folder."""
    path, folder = Path(json_file), Path(image_dir)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--sugarcrepe {path}: cannot read JSON ({type(exc).__name__}); expected "
                         '{id: {"filename", "caption", "negative_caption"}}') from None
    if not isinstance(table, dict):
        raise InputError(f"--sugarcrepe {path}: expected a JSON object of items")
    items = []
    for key, entry in table.items():
        if not isinstance(entry, dict) or not {"filename", "caption", "negative_caption"} <= set(entry):
            raise InputError(f"--sugarcrepe {path}: item {key!r} lacks filename, caption or negative_caption")
        image_path = folder / entry["filename"]
        if not image_path.is_file():
            raise InputError(f"--sugarcrepe {path}: item {key!r}: image {image_path} not found")
        items.append(Item(str(key), entry["caption"], entry["negative_caption"],
                          image=lambda p=image_path: Image.open(p).convert("RGB")))
    return items
