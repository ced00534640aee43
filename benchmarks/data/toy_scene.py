"""One toy sample: the 64 colour x shape classes, which of them a seed holds out, and the drawing of a target
among its distractors with its caption (`make_sample`); `benchmarks.data.toy` writes them into shards.

Standard task: one large target and one small distractor. Hard task: a target of half the radius among 3 to 5
distractors of nearly its size (HARD_* below). Both use the same captions (`benchmarks.data.toy_captions`),
and neither ever draws or names a held-out combination as a distractor.

    from benchmarks.data.toy_scene import held_out_classes, held_out_pairs, make_sample
    image, caption, attributes = make_sample(random.Random(0), 9, held_out_pairs(held_out_classes(1)), "hard")
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image

from benchmarks.data.toy_captions import position_words, write_caption
from benchmarks.data.toy_drawing import draw_object

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges keep small shapes recognisable
JPEG_QUALITY = 90

# Object colours; every name starts with a consonant so "a {colour} {shape}" is always good English.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "brown": (130, 85, 45),
    "cyan": (40, 200, 210),
}
# Chosen to stay distinct under any rotation and scale (no square/diamond-like pairs).
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "heart", "crescent")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    **COLOURS,
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
MIN_BACKGROUND_DISTANCE = 110  # RGB distance between target and background: the target stays visible

CLASS_NAMES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
CLASS_ATTRIBUTES = tuple({"colour": colour, "shape": shape} for colour in COLOURS for shape in SHAPES)

# Held out of training: colour i with shapes i + s and i + s + 3 (mod 8) for the seed's shift s (seed mod 8),
# a Latin-square pattern, so each colour and each shape is held out in exactly two classes and trained in six.
HELD_OUT_SHAPE_OFFSETS = (0, 3)


def held_out_classes(seed: int) -> tuple[int, ...]:
    """The 16 held-out class indices of the toy set of `seed`: the square shifted by seed mod 8 (seed 0:
    colour i with shapes i and i + 3; seeds s and s + 8 share a square, not their images)."""
    shift = seed % len(SHAPES)
    return tuple(sorted(c * len(SHAPES) + (c + shift + k) % len(SHAPES)
                        for c in range(len(COLOURS)) for k in HELD_OUT_SHAPE_OFFSETS))


def seen_classes(held_out: tuple[int, ...]) -> tuple[int, ...]:
    """The classes trained on: every class not in `held_out`, in index order."""
    return tuple(i for i in range(len(CLASS_NAMES)) if i not in held_out)


def held_out_pairs(classes: tuple[int, ...]) -> frozenset[tuple[str, str]]:
    return frozenset((CLASS_ATTRIBUTES[i]["colour"], CLASS_ATTRIBUTES[i]["shape"]) for i in classes)


# Radii as a fraction of the image side: the target spans 50% to 80% of the image; the distractor 14% to
# 20%, so even a thin target (star, triangle) at its smallest covers twice the area of a large distractor.
TARGET_RADIUS = (0.25, 0.40)
DISTRACTOR_RADIUS = (0.07, 0.10)
# The hard task: half the target radius (16-26 px across at 64 px, a quarter of the standard area) among 3
# to 5 distractors of 65-85% of its radius, so size no longer singles the target out at a glance (together
# they cover about 1.3-3.6x its area) while it stays the largest object, the one every caption names first.
HARD_TARGET_RADIUS = (0.125, 0.20)
HARD_DISTRACTORS = (3, 5)
HARD_DISTRACTOR_SCALE = (0.65, 0.85)
PLACEMENT_TRIES = 400  # shrinking by 8% every 20 tries: the last tries place an object at 1/5 of its size


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 14) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def _distractor_pairs(rng: random.Random, colour: str, shape: str, held_out_pairs: frozenset,
                      task: str) -> list[tuple[str, str]]:
    """(colour, shape) of each distractor: another colour and shape than the target's and never a held-out
    combination (its name would otherwise reach the text tower through the training captions); in the
    hard task 3 to 5 of them, each of its own colour."""
    allowed = [(c, s) for c in COLOURS for s in SHAPES
               if c != colour and s != shape and (c, s) not in held_out_pairs]
    if task == "standard":
        return [rng.choice(allowed)]
    pairs: list[tuple[str, str]] = []
    for _ in range(rng.randint(*HARD_DISTRACTORS)):
        used = {c for c, _ in pairs}
        pairs.append(rng.choice([pair for pair in allowed if pair[0] not in used]))
    return pairs


def _place(rng: random.Random, radius: float, taken: list[tuple[float, float, float]]) -> tuple[float, ...]:
    """(x, y, radius) of a hard-task distractor clear of every object in `taken` ((x, y, radius) each),
    shrunk by 8% every 20 tries while it does not fit."""
    for attempt in range(PLACEMENT_TRIES):
        x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
        if all(math.dist((x, y), (tx, ty)) >= radius + tr + 0.03 for tx, ty, tr in taken):
            return x, y, radius
        if attempt % 20 == 19:
            radius *= 0.92
    raise RuntimeError(f"toy: no room for a distractor after {PLACEMENT_TRIES} tries")


def make_sample(rng: random.Random, class_index: int, held_out_pairs: frozenset[tuple[str, str]],
                task: str = "standard") -> tuple[bytes, str, dict]:
    """Draw one sample of class `class_index` for `task`, no distractor a combination of `held_out_pairs`:
    (JPEG bytes, caption, attributes)."""
    colour, shape = CLASS_ATTRIBUTES[class_index]["colour"], CLASS_ATTRIBUTES[class_index]["shape"]
    pairs = _distractor_pairs(rng, colour, shape, held_out_pairs, task)
    d_colour, d_shape = pairs[0]  # the one a caption may name
    target_rgb = COLOURS[colour]
    backgrounds = [
        name for name, rgb in BACKGROUNDS.items()
        if name != colour and name not in {c for c, _ in pairs}
        and math.dist(rgb, target_rgb) >= MIN_BACKGROUND_DISTANCE
    ]
    background = rng.choice(backgrounds)

    if task == "standard":
        radius = rng.uniform(*TARGET_RADIUS)
        d_radius = rng.uniform(*DISTRACTOR_RADIUS)
        x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
        # Place the distractor clear of the target; shrink the target if it leaves no room.
        for attempt in range(200):
            dx, dy = rng.uniform(d_radius, 1 - d_radius), rng.uniform(d_radius, 1 - d_radius)
            if math.dist((x, y), (dx, dy)) >= radius + d_radius + 0.03:
                break
            if attempt % 20 == 19:
                radius = max(TARGET_RADIUS[0], radius * 0.92)
                x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
        rotation, d_rotation = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
        placed = [(dx, dy, d_radius, d_rotation)]
    else:
        radius = rng.uniform(*HARD_TARGET_RADIUS)
        x, y = rng.uniform(radius, 1 - radius), rng.uniform(radius, 1 - radius)
        rotation = rng.uniform(0, 2 * math.pi)
        taken, placed = [(x, y, radius)], []
        for _ in pairs:
            dx, dy, d_radius = _place(rng, radius * rng.uniform(*HARD_DISTRACTOR_SCALE), taken)
            taken.append((dx, dy, d_radius))
            placed.append((dx, dy, d_radius, rng.uniform(0, 2 * math.pi)))

    side = IMAGE_SIZE * SUPERSAMPLE
    img = Image.new("RGB", (side, side), _jitter(BACKGROUNDS[background], rng))
    draw_object(img, shape, _jitter(target_rgb, rng), x * side, y * side, radius * side, rotation)
    for (p_colour, p_shape), (dx, dy, d_radius, d_rotation) in zip(pairs, placed, strict=True):
        draw_object(img, p_shape, _jitter(COLOURS[p_colour], rng), dx * side, dy * side, d_radius * side,
                    d_rotation)
    img = img.reduce(SUPERSAMPLE)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)

    caption = write_caption(rng, colour, shape, radius, (x, y), background, d_colour, d_shape)
    objects = [{"colour": c, "shape": s, "radius": round(r, 4), "center": [round(dx, 4), round(dy, 4)]}
               for (c, s), (dx, dy, r, _) in zip(pairs, placed, strict=True)]
    attributes = {
        "class": class_index, "colour": colour, "shape": shape, "radius": round(radius, 4),
        "center": [round(x, 4), round(y, 4)], "rotation_deg": round(math.degrees(rotation), 2),
        "background": background, "position": position_words(x, y)[1], "distractor": objects[0],
    }
    if task != "standard":  # every distractor; `distractor` is the first, the one a caption may name
        attributes["distractors"] = objects
    return buf.getvalue(), caption, attributes
