"""Export a trained run as model files other people load: open_clip's, or ours in safetensors.

    python -m towers.export runs/transformer-seed0 --to exported/transformer-seed0
    python -m towers.export runs/x/checkpoints/step_00000750.pt --to exported/x

A Transformer pair (ViT image tower, causal text Transformer) is written as open_clip's local model
files, `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) and `open_clip_model.safetensors`, which
open_clip 3.x loads with `open_clip.create_model_and_transforms("local-dir:DIR")` and which give our
embeddings (tests/test_export.py). A pair with a Mixer tower, or a text tower that reads its caption
bidirectionally, has no open_clip model config: the export says why in one line and writes our own
form instead, `mixclip_config.json` (the model config) and `model.safetensors`, which
`towers.load(DIR)` reads back (`--ours` asks for that form for any run). Nothing here unpickles
anything but the run's own checkpoint, and that with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import load_file, save_file

from runfolder import RunFolder
from runfolder.errors import InputError, OneLineParser, run_main
from towers.checkpoints import (
    LATEST_POINTER,
    CheckpointError,
    load_weights,
    model_from_checkpoint,
    read_checkpoint,
)
from towers.clip import CLIP, build_from_config

OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
OUR_CONFIG, OUR_WEIGHTS = "mixclip_config.json", "model.safetensors"
# Our keys that open_clip's CLIP keeps elsewhere (the inverse of convert_open_clip_state_dict)
OPEN_CLIP_TEXT_PREFIXES = ("text.token_embedding.", "text.positional_embedding", "text.transformer.",
                           "text.ln_final.")


class ExportError(InputError):
    """A run that cannot be exported as asked; the message is one line."""


def checkpoint_of(run: str | os.PathLike) -> Path:
    """The checkpoint a RUN argument names: a run dir (its checkpoints/latest) or a checkpoint file."""
    path = Path(run)
    if path.is_dir():
        found = RunFolder(path).latest()
        if found is None or not found.is_file():
            raise ExportError(f"{run}: run dir without a readable checkpoints/{LATEST_POINTER} "
                              "(expected RUN/checkpoints/latest naming a checkpoint file)")
        return found
    if path.is_file():
        return path
    raise ExportError(f"{run}: no such run dir or checkpoint file")


def open_clip_refusal(model_config: dict) -> str | None:
    """Why open_clip cannot hold this model, or None when it can."""
    families = (model_config["image_family"], model_config["text_family"])
    if "mixer" in families:
        which = " and ".join(f"{m} tower" for m, f in zip(("image", "text"), families, strict=True)
                             if f == "mixer")
        return (f"open_clip cannot hold the Mixer {which}: its model configs build ViT, ConvNeXt or timm "
                "image towers behind open_clip's own heads and Transformer text towers only")
    if families[0] != "transformer":  # e.g. cnn: a ResNet of our sizes, not a timm model open_clip names
        return (f"open_clip cannot hold the {families[0]} image tower: its model configs build ViT, "
                "ConvNeXt, ModifiedResNet or named timm image towers behind open_clip's own heads")
    text = model_config.get("text_overrides") or {}
    for key, value in text.items():  # a text-mask option (causal | caption), where a run has one
        if "mask" in key and value not in (None, "causal"):
            return (f"open_clip cannot hold text_overrides.{key}={value!r}: its text Transformer is always "
                    "causal")
    if text.get("quick_gelu") != (model_config.get("image_overrides") or {}).get("quick_gelu"):
        return "open_clip cannot hold QuickGELU in one tower only: quick_gelu is one flag for both"
    return None


def open_clip_config(model: CLIP) -> dict:
    """open_clip's `model_cfg` + `preprocess_cfg` for a Transformer pair (heads read off the towers)."""
    visual, text = model.visual, model.text
    vision_layers = len(visual.transformer.resblocks)
    vision_heads = visual.transformer.resblocks[0].attn.num_heads
    text_heads = text.transformer.resblocks[0].attn.num_heads
    mlp = lambda tower, width: tower.transformer.resblocks[0].mlp.c_fc.out_features / width  # noqa: E731
    quick_gelu = bool((model.model_config.get("image_overrides") or {}).get("quick_gelu", False))
    return {
        "model_cfg": {
            "embed_dim": model.embed_dim, "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": model.image_size, "layers": vision_layers,
                           "width": visual.width, "head_width": visual.width // vision_heads,
                           "patch_size": visual.patch_size[0], "mlp_ratio": mlp(visual, visual.width)},
            "text_cfg": {"context_length": model.context_length, "vocab_size": text.vocab_size,
                         "width": text.width, "heads": text_heads, "layers": text.transformer.layers,
                         "mlp_ratio": mlp(text, text.width)},
        },
        "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD),
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }


def open_clip_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """Our CLIP's weights under open_clip CLIP's names."""
    converted = {}
    for key, value in model.state_dict().items():
        if key == "image_projection":
            key = "visual.proj"
        elif key.startswith(OPEN_CLIP_TEXT_PREFIXES):
            key = key[len("text."):]
        converted[key] = value.detach().contiguous()
    return converted


def _write(folder: Path, config_name: str, config: dict, weights_name: str,
           tensors: dict[str, torch.Tensor], provenance: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / weights_name), metadata={"format": "pt", "source": provenance["source"]})
    (folder / config_name).write_text(json.dumps({**config, "mixclip": provenance}, indent=2) + "\n")


def export(run: str | os.PathLike, to: str | os.PathLike, ours: bool = False) -> tuple[Path, str | None]:
    """Write RUN's model to `to` as open_clip files, or as our safetensors + config when ``ours`` is set
    or open_clip cannot hold it. Returns (folder, why open_clip could not hold it, or None)."""
    checkpoint_path = checkpoint_of(run)
    checkpoint = read_checkpoint(checkpoint_path)
    if "model_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ExportError(f"{checkpoint_path}: not a mixclip checkpoint (model_config + state_dict)")
    model = build_from_config(dict(checkpoint["model_config"]))

    load_weights(model, checkpoint["state_dict"], str(checkpoint_path))
    # Our model config rides along in both forms, so towers.load rebuilds exactly this model.
    provenance = {"source": str(checkpoint_path), "model_name": model.model_name,
                  "model_config": model.model_config, "recipe_sha256": checkpoint.get("recipe_sha256"),
                  "step": checkpoint.get("step")}
    folder = Path(to)
    refusal = open_clip_refusal(model.model_config)
    if ours or refusal:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        _write(folder, OUR_CONFIG, {}, OUR_WEIGHTS, tensors, provenance)
    else:
        _write(folder, OPEN_CLIP_CONFIG, open_clip_config(model), OPEN_CLIP_WEIGHTS,
               open_clip_state_dict(model), provenance)
    return folder, refusal


def load_exported(folder: str | os.PathLike) -> CLIP:
    """The model of an exported folder (ours or open_clip's files), weights from safetensors only."""

    folder = Path(folder)
    for config_name, weights_name in ((OUR_CONFIG, OUR_WEIGHTS), (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS)):
        if not ((folder / config_name).is_file() and (folder / weights_name).is_file()):
            continue
        config = json.loads((folder / config_name).read_text())
        weights = load_file(str(folder / weights_name))
        ours = (config.get("mixclip") or {}).get("model_config")
        if ours is None:  # open_clip files from elsewhere: the architecture is read off the shapes
            quick_gelu = config.get("model_cfg", {}).get("quick_gelu", False)
            return model_from_checkpoint(weights, str(folder / weights_name), quick_gelu)
        model = build_from_config(ours)
        load_weights(model, weights, str(folder / weights_name))
        return model
    raise CheckpointError(f"{folder}: no exported model ({OUR_CONFIG} + {OUR_WEIGHTS}, or "
                          f"{OPEN_CLIP_CONFIG} + {OPEN_CLIP_WEIGHTS})")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m towers.export", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run dir (its checkpoints/latest) or a checkpoint file")
    parser.add_argument("--to", required=True, help="folder to write the model files into")
    parser.add_argument("--ours", action="store_true",
                        help=f"write {OUR_WEIGHTS} + {OUR_CONFIG} (towers.load) instead of open_clip's files")
    args = parser.parse_args(argv)
    try:
        folder, refusal = export(args.run, args.to, ours=args.ours)
    except (ExportError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if refusal:
        print(f"not exported for open_clip: {refusal}; wrote {folder}/{OUR_WEIGHTS} + {OUR_CONFIG} instead "
              "(towers.load reads them)", file=sys.stderr)
    elif not args.ours:
        print(f'exported to {folder}/ (open_clip: create_model_and_transforms("local-dir:{folder}"))')
    if refusal or args.ours:
        print(f"exported to {folder}/ (towers.load({str(folder)!r}))")
    return 0


if __name__ == "__main__":
    run_main(main)
