"""`towers.load`: one model from whatever a runner's `--model` takes (run folder, checkpoint file, exported
folder, towers model name, open_clip name). It sits above both formats it reads, our checkpoints
(towers.checkpoints) and exported folders (towers.export), so neither imports the other's reader back.

    model, preprocess = towers.load("runs/mixer-seed0")      # a run folder: its checkpoints/latest
    model, preprocess = towers.load("exported/mixer-seed0")  # what `python -m towers.export` wrote
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from runfolder import RunFolder
from towers.checkpoints import (
    CheckpointError,
    is_open_clip_name,
    model_from_checkpoint,
    model_from_open_clip,
    read_checkpoint,
)
from towers.clip import CLIP, available_models, create_model
from towers.export import OPEN_CLIP_CONFIG, OUR_CONFIG, load_exported
from towers.preprocess import image_transform


def checkpoint_of_run(folder: str | os.PathLike) -> Path:
    """The checkpoint a run folder's `checkpoints/latest` names (what every runner's --model scores)."""
    checkpoint = RunFolder(folder).latest()
    if checkpoint is None or not checkpoint.is_file():
        raise CheckpointError(f"{folder}: a run folder without a readable checkpoints/latest, and not a "
                              "folder python -m towers.export wrote")
    return checkpoint


def load(path_or_name: str | os.PathLike, device: str | torch.device = "cpu",
         quick_gelu: bool | None = None, pretrained: str | None = None) -> tuple[CLIP, Callable]:
    """(model in eval mode on `device`, eval preprocess) from whatever a runner's `--model` takes: a run
    folder (its `checkpoints/latest`), a checkpoint file, a folder that `python -m towers.export` wrote
    (ours or open_clip's files), a towers model name (random weights), or an open_clip name
    (`ViT-B-32` with `pretrained=` a tag or file, or `hf-hub:ORG/REPO`)."""
    path = Path(path_or_name)
    if pretrained is not None and not is_open_clip_name(path_or_name):
        raise CheckpointError(f"pretrained={pretrained!r} applies to open_clip names only, "
                              f"not {path_or_name}")
    if path.is_dir():
        if (path / OUR_CONFIG).is_file() or (path / OPEN_CLIP_CONFIG).is_file():
            model = load_exported(path)
        else:
            checkpoint = checkpoint_of_run(path)
            model = model_from_checkpoint(read_checkpoint(checkpoint), str(checkpoint), quick_gelu)
    elif path.is_file():
        model = model_from_checkpoint(read_checkpoint(path_or_name), str(path_or_name), quick_gelu)
    elif str(path_or_name) in available_models():
        model = create_model(str(path_or_name), quick_gelu=bool(quick_gelu))
    elif is_open_clip_name(path_or_name):
        model = model_from_open_clip(str(path_or_name), pretrained)
    else:
        raise CheckpointError(f"{str(path_or_name)!r} is neither a run folder, a checkpoint file, a model "
                              f"name ({', '.join(available_models()[:4])}, ...) nor an open_clip name "
                              "(ViT-B-32, hf-hub:ORG/REPO)")
    model = model.to(device).eval()
    return model, image_transform(model.image_size, train=False)
