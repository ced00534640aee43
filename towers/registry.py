"""The tower registry: family name -> the module (or object) that builds its towers.

A family defines `VARIANTS` (variant name -> {"embed_dim", "image": {...}, "text": {...}}),
`build(modality, **config)` and `text_mask_overrides(text_mask, token_mixing)`. The three built-in
families are listed here; any other is added without editing this file, like timm's `register_model`:

    import towers, my_family                    # my_family.py: VARIANTS, build, text_mask_overrides
    towers.register_family("myfam", my_family)  # now "myfam-B-32", --tower myfam, ...

or, for `--tower myfam` on the command line, by an installed package's entry point in the group
`mixclip.towers` (pyproject: `[project.entry-points."mixclip.towers"] myfam = "my_family"`), which is
registered when this module is imported. The parametrised tests in `tests/` cover every family.

    from towers import build_tower
    tower = build_tower("mixer", "text", "B/32", token_mixing="full")
"""

from __future__ import annotations

import sys
from importlib import metadata
from types import ModuleType
from typing import Any

from torch import nn

from runfolder.vocabulary import VARIANT_ALIASES
from towers import cnn, mixer, transformer

FAMILIES: dict[str, ModuleType | Any] = {
    "transformer": transformer,
    "mixer": mixer,
    "cnn": cnn,
}
MODALITIES = ("image", "text")
ENTRY_POINT_GROUP = "mixclip.towers"
FAMILY_ATTRIBUTES = ("VARIANTS", "build", "text_mask_overrides")


def register_family(name: str, family: ModuleType | Any, *, replace: bool = False) -> None:
    """Add a tower family: `family` has `VARIANTS`, `build(modality, **config)` and
    `text_mask_overrides(text_mask, token_mixing)`. Names with `-` or `+` would not parse in model
    names (`image+text-variant`), and an existing name is kept unless `replace=True`."""
    if not name or any(char in name for char in "-+/ ") or name != name.strip():
        raise ValueError(f"tower family name {name!r}: use letters, digits and _ (no '-', '+', '/')")
    lacking = [attribute for attribute in FAMILY_ATTRIBUTES if not hasattr(family, attribute)]
    if lacking:
        raise ValueError(f"tower family {name!r} lacks {', '.join(lacking)}; a family defines "
                         f"{', '.join(FAMILY_ATTRIBUTES)}")
    if not family.VARIANTS or not all({"embed_dim", "image", "text"} <= set(row)
                                      for row in family.VARIANTS.values()):
        raise ValueError(f"tower family {name!r}: VARIANTS must map each variant to "
                         "{'embed_dim', 'image': {...}, 'text': {...}}")
    if name in FAMILIES and FAMILIES[name] is not family and not replace:
        raise ValueError(f"tower family {name!r} is already registered (pass replace=True to replace it)")
    FAMILIES[name] = family


def unregister_family(name: str) -> None:
    """Remove a registered family (tests; a session that registered a stand-in)."""
    FAMILIES.pop(name, None)


def _register_entry_points() -> None:
    """Families that installed packages declare in the `mixclip.towers` entry-point group; a broken
    one is reported in one line and skipped, so it cannot stop the built-in families from working."""
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in FAMILIES:
            continue
        try:
            register_family(entry.name, entry.load())
        except Exception as error:  # noqa: BLE001 - a third-party package's bug: say it, keep going
            print(f"warning: tower family entry point {entry.name} = {entry.value}: {error}", file=sys.stderr)


def canonical_variant(variant: str) -> str:
    """`B-32` and `B/32` name the same variant; the tables use the slash form."""
    return variant.replace("-", "/")


def family_module(family: str) -> ModuleType | Any:
    if family not in FAMILIES:
        raise ValueError(f"unknown tower family {family!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def variant_names(variants: dict) -> list[str]:
    """A table's variant names, each alias of one of its rows first (runfolder.vocabulary: `tiny`)."""
    return [alias for alias, row in VARIANT_ALIASES.items() if row in variants and alias not in variants] \
        + list(variants)


def _row_name(variants: dict, name: str) -> str:
    return name if name in variants else VARIANT_ALIASES.get(name, name)


def variant_table(family: str, variant: str) -> dict:
    """The variant's row of the family's table (embed_dim and both towers' configs)."""
    variants = family_module(family).VARIANTS
    name = _row_name(variants, canonical_variant(variant))
    if name not in variants:
        raise ValueError(f"unknown variant {variant!r} for tower family {family!r}: "
                         f"expected one of {variant_names(variants)}")
    return variants[name]


def tower_config(family: str, modality: str, variant: str, **overrides) -> dict:
    """The resolved keyword arguments that build one tower."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}: expected one of {list(MODALITIES)}")
    return {**variant_table(family, variant)[modality], **overrides}


def build_tower(family: str, modality: str, variant: str, **overrides) -> nn.Module:
    """Build one tower. It exposes `.width` and maps its input to (B, width) pooled features."""
    config = tower_config(family, modality, variant, **overrides)
    try:
        return family_module(family).build(modality, **config)
    except TypeError as error:  # an override the family does not take
        raise ValueError(f"bad override for {family} {modality} tower: {error}") from None


def text_mask_overrides(family: str, text_mask: str, token_mixing: str | None = None) -> dict:
    """Text-tower overrides that make `family`'s text tower read with `text_mask` (towers.text_mask);
    `token_mixing` is the Mixer's explicit mode, if any (it must read with that mask)."""
    return family_module(family).text_mask_overrides(text_mask, token_mixing)


def model_kwargs(image_family: str, text_family: str, variant: str, embed_dim: int | None, *,
                 text_mask: str, token_mixing: str | None = None, image_size: int | None = None,
                 context_length: int = 77, image_init: str = "library", image_pool: str = "library") -> dict:
    """Arguments of `towers.build_model` for a recipe's towers: the one mapping from an experiment (or a
    run's recorded one) to a model, so a benchmark can rebuild a run's architecture without launch/."""
    image_overrides = {"image_size": image_size} if image_size else {}
    # passed only when set, so a family without these options builds as before
    image_overrides.update({key: value for key, value in (("init", image_init), ("pool", image_pool))
                            if value != "library"})
    # each family applies the text mask its own way, the caller does not branch on it
    text_overrides = text_mask_overrides(text_family, text_mask, token_mixing)
    if context_length != 77:
        text_overrides["context_length"] = context_length
    return dict(image_family=image_family, text_family=text_family, variant=variant, embed_dim=embed_dim,
                image_overrides=image_overrides, text_overrides=text_overrides)


def pair_variants(image_family: str, text_family: str) -> list[str]:
    """Variants in which this image family and this text family can be paired: those both define
    (a pair takes both towers in the same size), in the image family's table order. One family's
    table never changes another pair's list."""
    text_variants = family_module(text_family).VARIANTS
    image_variants = variant_names(family_module(image_family).VARIANTS)
    return [v for v in image_variants if _row_name(text_variants, v) in text_variants]


def all_variants() -> list[str]:
    """Every variant some pair of registered families can build, in table order (built-ins first)."""
    seen: dict[str, None] = {}
    for image_family in FAMILIES:
        for text_family in FAMILIES:
            seen.update(dict.fromkeys(pair_variants(image_family, text_family)))
    return list(seen)


_register_entry_points()
