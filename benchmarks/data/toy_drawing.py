"""Drawing the toy data set's shapes: outlines for the polygon shapes and masked, anti-aliasable
drawing of one object (holes of rings and crescents show what lies below).

Used by `benchmarks.data.toy`; every shape stays distinct from the others under any rotation.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw


def shape_polygon(shape: str, radius: float, rotation: float) -> list[tuple[float, float]]:
    """Outline of a polygonal shape centred on (0, 0), fitting in a circle of `radius`."""
    if shape == "square":
        points = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif shape == "triangle":
        points = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "star":
        points = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(a), (1.0 if k % 2 == 0 else 0.42) * math.sin(a))
            for k, a in ((k, -math.pi / 2 + k * math.pi / 5) for k in range(10))
        ]
    elif shape == "cross":
        w = 0.34  # arm half-width
        points = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
                  (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
        points = [(x / math.hypot(1, w), y / math.hypot(1, w)) for x, y in points]
    elif shape == "heart":
        ts = [2 * math.pi * k / 48 for k in range(48)]
        raw = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                          - math.cos(4 * t))) for t in ts]
        cy = (max(y for _, y in raw) + min(y for _, y in raw)) / 2
        scale = max(math.hypot(x, y - cy) for x, y in raw)
        points = [(x / scale, (y - cy) / scale) for x, y in raw]
    else:
        raise ValueError(f"{shape} is not a polygon shape")
    cos, sin = math.cos(rotation), math.sin(rotation)
    return [(radius * (x * cos - y * sin), radius * (x * sin + y * cos)) for x, y in points]


def draw_object(img: Image.Image, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
                 radius: float, rotation: float) -> None:
    """Draw one object into `img` (supersampled pixel coordinates) through a mask, so that holes
    (ring, crescent) show whatever lies below. The mask covers only the object's bounding box."""
    x0, y0 = max(0, int(cx - radius) - 1), max(0, int(cy - radius) - 1)
    x1, y1 = min(img.width, int(cx + radius) + 2), min(img.height, int(cy + radius) + 2)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = cx - x0, cy - y0
    if shape in ("circle", "ring", "crescent"):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        if shape == "ring":
            r = 0.55 * radius
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=0)
        elif shape == "crescent":
            r, off = 0.82 * radius, 0.5 * radius
            hx, hy = cx + off * math.cos(rotation), cy + off * math.sin(rotation)
            draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=0)
    else:
        draw.polygon([(cx + x, cy + y) for x, y in shape_polygon(shape, radius, rotation)], fill=255)
    img.paste(colour, (x0, y0, x1, y1), mask)
