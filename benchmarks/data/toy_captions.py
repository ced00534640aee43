"""The toy set's captions: which templates exist, how often each kind is drawn, and how one is filled.

Every caption names the target as "<colour> <shape>"; a caption of kind `background` also names the
background colour, one of kind `distractor` the smaller second object, always after the target and as
"small", "little" or "tiny". `benchmarks.data.toy` draws images and calls `write_caption`;
`benchmarks.data.word_order_sets` builds its hard negatives from these same templates.
"""

from __future__ import annotations

import random

# Caption templates by what they name besides the target. {t} is the target "<colour> <shape>"; {size} a
# size word or nothing; {pos} a position phrase ("in the top left"), {at} its short form ("top left");
# {bg} the background colour; {d} the distractor "<colour> <shape>", always second and small.
CAPTION_TEMPLATES_BY_KIND = {
    "target": (
        # plain
        "a {t}", "{t}", "the {t}", "one {t}", "a picture of a {t}", "a drawing of a {t}",
        "a simple {t} shape", "a rotated {t}", "a flat {t} icon",
        # size
        "a {size} {t}", "an image of a {size} {t}", "clip art of a {size} {t}",
        # position
        "{t}, {at}", "a {t} {pos}", "there is a {t} {pos}",
    ),
    "background": (
        "a {t} on a {bg} background", "a {size} {t} on a {bg} background", "{t} on {bg}",
        "a {bg} background with a {t}", "{size} {t}, {bg} background", "a {t} {pos}, on a {bg} background",
    ),
    "distractor": (
        "a {t} next to a little {d}", "a picture of a {t} and a tiny {d}", "a {t}; a small {d} sits nearby",
        "a {t} and a small {d}", "a big {t} with a tiny {d}", "a {t} {pos} and a little {d}",
        "a {t} next to a little {d} on a {bg} background",
    ),
}
# How often a caption names the target only, the background too, or the distractor too: 2 in 7 name
# the distractor (version 3 drew one template uniformly: 1 in 8), so word order has something to bind.
CAPTION_KIND_WEIGHTS = {"target": 3, "background": 2, "distractor": 2}
CAPTION_TEMPLATES = tuple(t for kind in CAPTION_TEMPLATES_BY_KIND.values() for t in kind)


def position_words(x: float, y: float) -> tuple[str, str]:
    """(phrase, short form) for a centre in [0, 1]^2, e.g. ("in the top left", "top left")."""
    col = "left" if x < 0.42 else "right" if x > 0.58 else ""
    row = "top" if y < 0.42 else "bottom" if y > 0.58 else ""
    if row and col:
        return f"in the {row} {col}", f"{row} {col}"
    if row:
        return f"at the {row}", row
    if col:
        return f"on the {col}", col
    return "in the center", "center"


def size_word(radius: float, rng: random.Random) -> str:
    if radius < 0.29:
        return rng.choice(("small", "little"))
    if radius > 0.36:
        return rng.choice(("large", "big"))
    return rng.choice(("", "medium-sized"))


def write_caption(rng: random.Random, colour: str, shape: str, radius: float, center: tuple[float, float],
                  background: str, d_colour: str, d_shape: str) -> str:
    """One caption for an image: a kind drawn by CAPTION_KIND_WEIGHTS, then one of its templates."""
    kind = rng.choices(list(CAPTION_KIND_WEIGHTS), weights=list(CAPTION_KIND_WEIGHTS.values()))[0]
    template = rng.choice(CAPTION_TEMPLATES_BY_KIND[kind])
    pos, at = position_words(*center)
    caption = template.format(t=f"{colour} {shape}", size=size_word(radius, rng), pos=pos, at=at,
                              bg=background, d=f"{d_colour} {d_shape}")
    return " ".join(caption.split())  # an empty {size} leaves a double space
