"""Loading weights: our checkpoints, open_clip state dicts and OpenAI's released CLIP checkpoints.

    model, preprocess = towers.load("runs/mixer/checkpoints/step_00001000.pt")
    model, preprocess = towers.load("ViT-B-32-openai.pt")   # OpenAI / open_clip weights, any ViT size
    model, preprocess = towers.load("mixer-B-32")            # a name: random init
    model, preprocess = towers.load("exported/mixer-seed0")  # what `python -m towers.export` wrote
    model, preprocess = towers.load("runs/mixer-seed0")      # a run folder: its checkpoints/latest
    model, preprocess = towers.load("ViT-B-32", pretrained="laion400m_e32")  # open_clip downloads it

Our checkpoint is a `torch.save`d dict holding `model_config` (see `CLIP.model_config`) and
`state_dict`, possibly with more (optimizer, step, recipe_sha256). open_clip and OpenAI state dicts
keep the text tower at the top level (`transformer.*`, `token_embedding.*`, ...) and the image
projection inside the ViT (`visual.proj`); `convert_open_clip_state_dict` maps them onto our layout,
and their architecture is read off the tensor shapes (as open_clip does for OpenAI's files). Files
load with `weights_only=True`; OpenAI's TorchScript archives go through `torch.jit.load`.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from runfolder import LATEST, RunFolder, latest_checkpoint  # noqa: F401 - re-exported
from runfolder.errors import InputError
from towers.clip import CLIP, available_models, build_from_config, build_model
from towers.transformer import VARIANTS as TRANSFORMER_VARIANTS

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
OPEN_CLIP_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")
SHOWN_KEYS = 5
LATEST_POINTER = LATEST  # a run's checkpoints/latest (runfolder owns the layout)


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def _shown(keys: list[str]) -> str:
    more = f" (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def is_open_clip_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "visual.conv1.weight" in state_dict and "visual.proj" in state_dict


def convert_open_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an open_clip CLIP / CustomTextCLIP (or OpenAI) state dict to our CLIP's keys."""
    converted = {}
    for key, value in state_dict.items():
        if key in OPENAI_EXTRA_KEYS or key.endswith("attn_mask"):
            continue
        if key == "visual.proj":
            key = "image_projection"
        elif key == "text.text_projection":
            key = "text_projection"
        elif key.startswith(OPEN_CLIP_TEXT_PREFIXES):
            key = "text." + key
        converted[key] = value
    return converted


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for key in state_dict if (m := pattern.match(key))})


def infer_open_clip_architecture(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Model config of a ViT CLIP read off an open_clip-layout state dict's shapes."""
    text = "text." if "text.token_embedding.weight" in state_dict else ""
    image_width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    image_mlp = state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    text_width = state_dict[f"{text}ln_final.weight"].shape[0]
    text_mlp = state_dict[f"{text}transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    projection = state_dict.get("text_projection", state_dict.get("text.text_projection"))
    image = dict(image_size=patch * grid, patch_size=patch, width=image_width,
                 layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
                 heads=image_width // 64, mlp_ratio=image_mlp / image_width)
    text_cfg = dict(width=text_width, layers=_count_blocks(state_dict, f"{text}transformer.resblocks."),
                    heads=text_width // 64, mlp_ratio=text_mlp / text_width,
                    context_length=state_dict[f"{text}positional_embedding"].shape[0],
                    vocab_size=state_dict[f"{text}token_embedding.weight"].shape[0])
    embed_dim = projection.shape[1]
    # Name it after the table row it matches, so `model_name` reads `transformer-B-32`.
    variant = next((name for name, row in TRANSFORMER_VARIANTS.items()
                    if row["embed_dim"] == embed_dim and row["image"].items() <= image.items()
                    and row["text"].items() <= text_cfg.items()), "B/32")
    return dict(image_family="transformer", text_family="transformer", variant=variant,
                embed_dim=embed_dim, image_overrides=image, text_overrides=text_cfg)


def load_weights(model: CLIP, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load a state dict (ours or open_clip's layout) strictly, or raise one clear CheckpointError."""
    if is_open_clip_layout(state_dict):
        state_dict = convert_open_clip_state_dict(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                   if k in state_dict and state_dict[k].shape != v.shape]
    problems = [f"{label}: {_shown(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatch (checkpoint vs model)", wrong_shape)) if keys]
    if problems:
        raise CheckpointError(f"{source} does not fit model {model.model_name!r}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The dict stored at `path`, read with weights_only=True (TorchScript archives via jit); `mmap`:
    tensors backed by the file's pages (the processes of a node share them)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - fall back to TorchScript, else report one line
        if _is_torchscript(path):
            try:  # OpenAI's released files are TorchScript archives, as open_clip handles them
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            except Exception:  # noqa: BLE001
                pass
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path}: not a readable torch checkpoint ({first_line})") from None


def model_from_checkpoint(checkpoint: Mapping, source: str, quick_gelu: bool | None = None) -> CLIP:
    """Build the model a checkpoint describes and load its weights."""
    if "model_config" in checkpoint and "state_dict" in checkpoint:
        model = build_from_config(dict(checkpoint["model_config"]))
        load_weights(model, checkpoint["state_dict"], source)
        return model
    if is_open_clip_layout(checkpoint):
        config = infer_open_clip_architecture(checkpoint)
        if quick_gelu is None:  # OpenAI's files carry these keys and need QuickGELU
            quick_gelu = any(key in checkpoint for key in OPENAI_EXTRA_KEYS)
        if quick_gelu:
            config["image_overrides"]["quick_gelu"] = config["text_overrides"]["quick_gelu"] = True
        model = build_model(**config)
        load_weights(model, checkpoint, source)
        return model
    raise CheckpointError(f"{source}: neither a mixclip checkpoint (model_config + state_dict) nor an "
                          f"open_clip/OpenAI CLIP state dict (found keys {_shown(sorted(checkpoint))})")


def is_open_clip_name(spec: str | os.PathLike) -> bool:
    """Whether `spec` names an open_clip model: `hf-hub:ORG/REPO` or an architecture such as ViT-B-32
    (a towers model name or an existing path wins over a same-named open_clip one)."""
    spec = str(spec)
    if spec.startswith("hf-hub:"):
        return True
    if Path(spec).exists() or spec in available_models():
        return False
    import open_clip

    return spec in open_clip.list_models()


def _uses_quick_gelu(open_clip_model: torch.nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(module, QuickGELU) for module in open_clip_model.modules())


def model_from_open_clip(name: str, pretrained: str | None = None) -> CLIP:
    """An open_clip ViT CLIP (`ViT-B-32` with `pretrained="laion400m_e32"` or a local file, or an
    `hf-hub:` name) built by open_clip itself, which downloads what it needs, and loaded into the
    `transformer` family (same embeddings: tests/test_open_clip_parity.py)."""
    import open_clip

    try:
        source = open_clip.create_model(name, pretrained=pretrained, device="cpu")
    except Exception as error:  # noqa: BLE001 - no network, unknown tag, bad file: one line
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"open_clip {name} (pretrained={pretrained}): {first_line}; without network, "
                              "give a local weights file as pretrained") from None
    state_dict = source.state_dict()
    if not is_open_clip_layout(state_dict):
        raise CheckpointError(f"open_clip {name} is not a ViT CLIP; only those load into towers "
                              "(the runners score any open_clip model with --open-clip ARCH)")
    return model_from_checkpoint(state_dict, f"open_clip {name}", _uses_quick_gelu(source))
