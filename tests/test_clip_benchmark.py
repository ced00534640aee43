"""`python -m benchmarks.clip_benchmark`: CLIP_benchmark's own evaluation scores our checkpoints, and on the
shared ImageNet samples (one image per class, read as CLIP_benchmark's `imagenet1k-unverified` layout)
its zero-shot top-1 equals `benchmarks.imagenet_zeroshot`'s for a Transformer and a Mixer pair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from open_clip import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES

import towers
from benchmarks import clip_benchmark
from benchmarks.encoder import load_encoder
from benchmarks.evaluations import zero_shot_eval
from benchmarks.zeroshot_classifier import TEMPLATE_SETS, zero_shot_classifier

pytest.importorskip("clip_benchmark")


def _run(tmp_path: Path, name: str, seed: int) -> Path:
    torch.manual_seed(seed)
    model = towers.create_model(name)
    checkpoints = tmp_path / "runs" / name / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict(), "step": 1},
               checkpoints / "step_00000001.pt")
    (checkpoints / "latest").write_text("step_00000001.pt\n")
    return tmp_path / "runs" / name


def test_our_model_flags_become_clip_benchmark_pretrained_models(tmp_path):
    run = _run(tmp_path, "mixer-tiny", 0)
    argv = clip_benchmark.clip_benchmark_argv(["eval", "--dataset", "cifar10", "--model", str(run),
                                               "mixer-tiny", "--batch_size", "8"])
    checkpoint = run / "checkpoints" / "step_00000001.pt"
    assert argv == ["eval", "--dataset", "cifar10", "--batch_size", "8", "--pretrained_model",
                    f"mixer-tiny-step_00000001,{checkpoint}", "mixer-tiny-random,mixer-tiny",
                    "--model_type", "mixclip", "--output", clip_benchmark.DEFAULT_OUTPUT]
    untouched = ["eval", "--model_type", "mixclip", "--pretrained_model", f"x,{checkpoint}"]
    assert clip_benchmark.clip_benchmark_argv(untouched) == untouched
    # open_clip names stay CLIP_benchmark's own (its default model type is open_clip)
    published = ["eval", "--model", "ViT-B-32", "--pretrained", "laion400m_e32", "--dataset", "cifar10"]
    assert clip_benchmark.clip_benchmark_argv(published) == published
    clip_benchmark.register()
    from clip_benchmark.models import MODEL_TYPES, load_clip

    assert "mixclip" in MODEL_TYPES
    model, transform, tokenizer = load_clip("mixclip", "x", str(checkpoint), None, "cpu")
    assert model.model_name == "mixer-tiny" and tokenizer(["a"]).shape == (1, 77)


def test_a_model_that_is_not_there_is_one_line_exit_2(tmp_path, capsys):
    assert clip_benchmark.main(["eval", "--model", str(tmp_path / "gone"), "--dataset", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone: not found" in err


@pytest.mark.slow
@pytest.mark.parametrize("name, seed", [("transformer-tiny", 0), ("mixer-tiny", 1)])
def test_zero_shot_top1_equals_ours_on_the_imagenet_samples(tmp_path, monkeypatch, shared_data, name, seed):
    run = _run(tmp_path, name, seed)
    root = tmp_path / "imagenet"
    root.mkdir()
    # imagenet1k-unverified reads ROOT/val/<wnid>/*.JPEG
    (root / "val").symlink_to((shared_data / "imagenet_samples").resolve())
    # 2 of the 7 simple templates, on both sides: still an average over templates, and the 1,000-class
    # classifier (CLIP_benchmark encodes it one class at a time) costs 2/7 of the text passes
    chosen = SIMPLE_IMAGENET_TEMPLATES[:2]
    monkeypatch.setitem(TEMPLATE_SETS, "simple", chosen)
    templates = [template("{c}") for template in chosen]
    (tmp_path / "templates.json").write_text(json.dumps({"imagenet1k": templates}))
    monkeypatch.chdir(tmp_path)
    assert clip_benchmark.main(["eval", "--model", str(run), "--dataset", "imagenet1k-unverified",
                                "--dataset_root", str(root), "--custom_template_file", "templates.json",
                                "--no_amp", "--num_workers", "0", "--batch_size", "100", "--quiet",
                                "--save_clf", "clf.pt"]) == 0
    written = json.loads(next(tmp_path.glob("imagenet1k-unverified_*_zeroshot_classification.json"))
                         .read_text())
    assert written["model"] == f"{name}-step_00000001"
    theirs = written["metrics"]

    encoder = load_encoder(model=str(run), device="cpu")
    # ours builds the classifier once into the test's private cache; the check below reads it back
    ours = zero_shot_eval(encoder, data=root / "val", templates="simple", cache=True, progress=False,
                          batch_size=100)
    assert ours["n"] == 1000
    print(f"{name}: CLIP_benchmark acc1 {theirs['acc1'] * 100:.1f}% acc5 {theirs['acc5'] * 100:.1f}%, "
          f"ours top1 {ours['top1']:.1f}% top5 {ours['top5']:.1f}%")
    assert round(theirs["acc1"] * 1000) == round(ours["top1"] * 10)  # counts of correct images
    assert round(theirs["acc5"] * 1000) == round(ours["top5"] * 10)
    assert theirs["mean_per_class_recall"] * 100 == pytest.approx(ours["mean_per_class_recall"], abs=1e-9)
    # and the classifier behind them, CLIP_benchmark's own against open_clip's builder through our Encoder
    classifier = zero_shot_classifier(encoder, IMAGENET_CLASSNAMES, chosen, cache=True,
                                      progress=False)
    saved = torch.load(tmp_path / "clf.pt", weights_only=True)
    assert saved.shape == classifier.shape == (128, 1000)
    print(f"{name}: classifier max abs diff {(saved - classifier).abs().max().item():.2e}")
    assert (saved - classifier).abs().max().item() <= 1e-6
