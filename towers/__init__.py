"""Pluggable image and text towers for CLIP, and the two-tower model that pairs any two of them.

Families (see `towers.registry.FAMILIES`): `transformer` (open_clip's ViT and causal text
Transformer), `mixer` (timm's MlpMixer and our Mixer text tower) and `cnn` (timm's ResNet and the
Transformer's text tower, a calibration arm). The API mirrors openai/CLIP:

    import towers
    towers.available_models()                  # ['transformer-tiny', 'transformer+mixer-tiny', ...]
    model = towers.create_model("mixer-B-32")
    model, preprocess = towers.load("runs/x")      # a run folder, checkpoint, or open_clip name
    model, preprocess_train, preprocess_val = towers.create_model_and_transforms("runs/x")
    tokens = towers.get_tokenizer(model)(["a red circle"])   # at the model's context length
    towers.register_family("myfam", my_family_module)      # a new family, no registry edit

`python -m towers` prints every model's parameters and GFLOPs.
"""

from towers.attention import attention_kernels
from towers.checkpoints import CheckpointError, load_weights, read_checkpoint
from towers.clip import CLIP, available_models, build_from_config, build_model, create_model, model_name
from towers.factory import Tokenizer, create_model_and_transforms, get_tokenizer
from towers.loading import load
from towers.preprocess import image_transform, tokenize
from towers.profile import profile
from towers.registry import FAMILIES, build_tower, register_family, unregister_family

__all__ = [
    "CLIP", "CheckpointError", "FAMILIES", "Tokenizer", "attention_kernels", "available_models",
    "build_from_config", "build_model", "build_tower", "create_model", "create_model_and_transforms",
    "get_tokenizer", "image_transform", "load", "load_weights", "model_name", "profile", "read_checkpoint",
    "register_family", "tokenize", "unregister_family",
]
