"""The tower registry: an explicit dict from family name to the module that builds it.

A family module defines `VARIANTS` (variant name -> {"embed_dim", "image": {...}, "text": {...}}),
`build(modality, **config)` and `text_mask_overrides(text_mask, token_mixing)`. Adding a family is one
module plus one entry in `FAMILIES`; the parametrised tests in `tests/` then cover it without edits.

    from towers import build_tower
    tower = build_tower("mixer", "text", "B/32", token_mixing="full")
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

from towers import mixer, transformer

FAMILIES: dict[str, ModuleType] = {
    "transformer": transformer,
    "mixer": mixer,
}
MODALITIES = ("image", "text")


def canonical_variant(variant: str) -> str:
    """`B-32` and `B/32` name the same variant; the tables use the slash form."""
    return variant.replace("-", "/")


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown tower family {family!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def variant_table(family: str, variant: str) -> dict:
    """The variant's row of the family's table (embed_dim and both towers' configs)."""
    variants = family_module(family).VARIANTS
    name = canonical_variant(variant)
    if name not in variants:
        raise ValueError(f"unknown variant {variant!r} for tower family {family!r}: "
                         f"expected one of {list(variants)}")
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
                 context_length: int = 77) -> dict:
    """Arguments of `towers.build_model` for a recipe's towers: the one mapping from an experiment (or a
    run's recorded one) to a model, so a benchmark can rebuild a run's architecture without launch/."""
    image_overrides = {"image_size": image_size} if image_size else {}
    # each family applies the text mask its own way, the caller does not branch on it
    text_overrides = text_mask_overrides(text_family, text_mask, token_mixing)
    if context_length != 77:
        text_overrides["context_length"] = context_length
    return dict(image_family=image_family, text_family=text_family, variant=variant, embed_dim=embed_dim,
                image_overrides=image_overrides, text_overrides=text_overrides)


def all_variants() -> list[str]:
    """Variants every family defines, in table order (pairs need both towers in the same size)."""
    tables = [list(module.VARIANTS) for module in FAMILIES.values()]
    return [v for v in tables[0] if all(v in table for table in tables[1:])]
