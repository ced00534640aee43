"""Zero-shot runner: the classifier equals open_clip's builder, top-1/top-5 equal a direct computation,
fakes with known scores (ImageFolder, .cls shards, toy), the bootstrap CI, the cache, and the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import open_clip
import pytest
import torch
from open_clip import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES, build_zero_shot_classifier
from PIL import Image

import towers
from benchmarks import imagenet_zeroshot as zs
from benchmarks import zeroshot_classifier
from benchmarks.classification_metrics import classification_metrics
from benchmarks.data import imagenet
from benchmarks.data import toy as toy_data
from benchmarks.encoder import FakeEncoder, ModelEncoder, load_open_clip
from benchmarks.zeroshot_classifier import zero_shot_classifier

TINY_OPEN_CLIP = {"embed_dim": 64,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                               "layers": 2}}
# class index -> wnid for a few ImageNet classes, including the last one (index 999)
WNIDS = {0: "n01440764", 1: "n01443537", 2: "n01484850", 490: "n03000247", 999: "n15075141"}
COLOURS = {0: (250, 0, 0), 1: (0, 250, 0), 2: (0, 0, 250), 490: (250, 250, 0), 999: (0, 250, 250)}


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "ViT-zs-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "ViT-zs-tiny"


def pixel_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def class_lookup(preprocess, paths_and_classes) -> dict[str, int]:
    """Preprocessed-pixel hash -> class, so a FakeEncoder can "see" the class of an image."""
    lookup = {}
    for path, cls in paths_and_classes:
        with Image.open(path) as image:
            lookup[pixel_key(preprocess(image))] = cls
    return lookup


def one_hot(index: int | list[int], dim: int) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[index] = 1.0
    return vector


def imagenet_text_index(templates) -> dict[str, list[int]]:
    """Prompt text -> the classes whose name produced it (OpenAI's names repeat 'missile' and
    'sunglasses', so two texts belong to two classes each)."""
    index: dict[str, list[int]] = {}
    for cls, name in enumerate(IMAGENET_CLASSNAMES):
        for template in templates:
            index.setdefault(template(name), []).append(cls)
    return index


def make_imagefolder(root, per_class: int = 2):
    for cls, wnid in WNIDS.items():
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            colour = tuple(max(0, c - 40 * i) for c in COLOURS[cls])
            Image.new("RGB", (40, 30), colour).save(root / wnid / f"{wnid}_{i}.JPEG", quality=95)
    return root


def test_classifier_equals_open_clip_builder(tiny_arch):
    """Our classifier (open_clip's builder driven through the Encoder) vs open_clip's builder on the raw
    model and tokenizer, all 80 OpenAI templates, on an open_clip model and on one of ours."""
    classnames = list(IMAGENET_CLASSNAMES[:12])
    templates = list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    torch.manual_seed(0)
    encoder = load_open_clip(tiny_arch, device="cpu")
    ours = zero_shot_classifier(encoder, classnames, templates, cache=False, progress=False)
    reference = build_zero_shot_classifier(encoder.model, open_clip.get_tokenizer(tiny_arch), classnames,
                                           templates, device="cpu")
    assert ours.shape == (64, 12)
    assert (ours - reference).abs().max().item() <= 1e-6

    torch.manual_seed(0)
    model = towers.create_model("mixer+transformer-tiny").eval()
    ours = zero_shot_classifier(ModelEncoder(model, "cpu"), classnames, templates, cache=False,
                                   progress=False)
    reference = build_zero_shot_classifier(model, towers.tokenize, classnames, templates, device="cpu")
    assert (ours - reference).abs().max().item() <= 1e-6


def test_top1_top5_equal_direct_computation_on_imagenet_samples(tiny_arch, shared_data):
    torch.manual_seed(0)
    encoder = load_open_clip(tiny_arch, device="cpu")
    root = shared_data / "imagenet_samples"
    result = zs.zero_shot_eval(encoder, "imagenet", root, batch_size=32, limit=120, templates="simple",
                               progress=False, keep_predictions=True)
    assert result["n"] == 120 and result["num_classes"] == 1000

    # independent path: classes.tsv labels, PIL + open_clip preprocess, open_clip's builder and accuracy
    rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
    files = [(next((root / wnid).iterdir()), int(index)) for index, wnid, _name in rows]
    keep = np.unique(np.linspace(0, 999, 120).round().astype(int))
    model, tokenizer = encoder.model.eval(), open_clip.get_tokenizer(tiny_arch)
    classifier = build_zero_shot_classifier(model, tokenizer, IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES)
    images = torch.stack([encoder.preprocess(Image.open(files[i][0])) for i in keep])
    targets = torch.tensor([files[i][1] for i in keep])
    with torch.no_grad():
        logits = 100.0 * model.encode_image(images, normalize=True) @ classifier
    # open_clip's accuracy(): correct if the target is among the top-k logits
    top5_direct = logits.topk(5, dim=1)[1]
    top1 = (top5_direct[:, 0] == targets).sum().item()
    top5 = (top5_direct == targets[:, None]).any(1).sum().item()
    assert result["predictions"]["targets"] == targets.tolist()
    assert torch.equal(torch.tensor(result["predictions"]["ranked"]), top5_direct)
    assert result["top1"] == pytest.approx(100 * top1 / len(keep))
    assert result["top5"] == pytest.approx(100 * top5 / len(keep))


def test_perfect_and_constant_encoders_on_all_imagenet_samples(shared_data):
    root = shared_data / "imagenet_samples"
    perfect = FakeEncoder(lambda text: one_hot(texts[text], 1000),
                          lambda image: one_hot(pixels[pixel_key(image)], 1000))
    rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
    pixels = class_lookup(perfect.preprocess, [(next((root / w).iterdir()), int(i)) for i, w, _ in rows])
    texts = imagenet_text_index(SIMPLE_IMAGENET_TEMPLATES)
    assert len(pixels) == 1000
    result = zs.zero_shot_eval(perfect, "imagenet", root, batch_size=250, templates="simple", progress=False)
    # 998 of 1000: OpenAI's names give classes 657/744 ("missile") and 836/837 ("sunglasses") identical
    # prompts, so the classifier cannot tell them apart; the tie goes to the lower index.
    assert result["top1"] == pytest.approx(99.8) and result["top5"] == pytest.approx(100.0)
    assert result["mean_per_class_recall"] == pytest.approx(99.8)

    constant = FakeEncoder(lambda text: [1.0, 0.0], lambda image: [1.0, 0.0])
    result = zs.zero_shot_eval(constant, "imagenet", root, batch_size=250, templates="simple", progress=False)
    assert result["top1"] == pytest.approx(0.1) and result["top5"] == pytest.approx(0.5)  # chance
    assert result["mean_per_class_recall"] == pytest.approx(0.1)


def test_imagefolder_labels_are_ilsvrc_indices_and_perfect_scores_100(tmp_path):
    root = make_imagefolder(tmp_path / "val")
    axis = {cls: i for i, cls in enumerate(WNIDS)}  # the 5 present classes get axes 0-4, all others axis 5
    texts = {text: axis[cls] for text, classes in imagenet_text_index(SIMPLE_IMAGENET_TEMPLATES).items()
             for cls in classes if cls in axis}
    perfect = FakeEncoder(lambda text: one_hot(texts.get(text, 5), 6),
                          lambda image: one_hot(axis[pixels[pixel_key(image)]], 6))
    pixels = class_lookup(perfect.preprocess,
                          [(path, cls) for cls, wnid in WNIDS.items() for path in (root / wnid).iterdir()])
    result = zs.zero_shot_eval(perfect, "imagenet", root, templates="simple", progress=False,
                               keep_predictions=True)
    assert sorted(set(result["predictions"]["targets"])) == sorted(WNIDS)  # 999 stays 999
    assert result["top1"] == result["top5"] == result["mean_per_class_recall"] == 100.0
    assert result["top1_ci95"] == [100.0, 100.0]


def write_cls_shard(path, root):
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for cls, wnid in WNIDS.items():
            for image_path in sorted((root / wnid).iterdir()):
                sink.write({"__key__": f"{wnid}_{image_path.stem}", "jpg": image_path.read_bytes(),
                            "txt": IMAGENET_CLASSNAMES[cls], "cls": str(cls)})


def test_webdataset_cls_shards_score_like_the_imagefolder(tmp_path):
    root = make_imagefolder(tmp_path / "val")
    write_cls_shard(tmp_path / "val-00000.tar", root)
    encoder = FakeEncoder(lambda text: [len(text) % 7, 1.0, len(text) % 3], lambda image: image.mean((1, 2)))
    from_folder = zs.zero_shot_eval(encoder, "imagenet", root, templates="simple", progress=False)
    from_shards = zs.zero_shot_eval(encoder, "imagenet", str(tmp_path / "val-00000.tar"), templates="simple",
                                    progress=False)
    for key in ("top1", "top5", "mean_per_class_recall", "n"):
        assert from_shards[key] == from_folder[key]
    assert from_shards["skipped"]["corrupt_image"] == 0


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory):
    return toy_data.ensure_toy(tmp_path_factory.mktemp("toy"), num_train=8, num_val=128, shard_size=64,
                               progress=False)


def toy_samples(toy):
    from benchmarks.data.shards import eval_loader

    return [(image, int(cls)) for images, _, classes, _ in eval_loader(toy.val, None, with_class=True)
            for image, cls in zip(images, classes, strict=True)]


def test_toy_perfect_and_constant_scores_with_attributes(small_toy):
    samples = toy_samples(small_toy)
    names = {name: i for i, name in enumerate(toy_data.CLASS_NAMES)}
    perfect = FakeEncoder(lambda text: one_hot(next(i for n, i in names.items() if text.count(n)), 64),
                          lambda image: one_hot(pixels[pixel_key(image)], 64))
    pixels = {pixel_key(perfect.preprocess(image)): cls for image, cls in samples}
    result = zs.zero_shot_eval(perfect, "toy", small_toy.val, progress=False)
    assert result["n"] == 128 and result["num_classes"] == 64
    assert result["top1"] == result["colour_acc"] == result["shape_acc"] == 100.0

    constant = FakeEncoder(lambda text: [1.0], lambda image: [1.0])
    result = zs.zero_shot_eval(constant, "toy", small_toy.val, progress=False)
    classes = np.array([cls for _, cls in samples])
    colours = np.array([toy_data.CLASS_ATTRIBUTES[c]["colour"] for c in classes])
    shapes = np.array([toy_data.CLASS_ATTRIBUTES[c]["shape"] for c in classes])
    assert result["top1"] == pytest.approx(100 * np.mean(classes == 0))  # always class 0 ("red circle")
    assert result["colour_acc"] == pytest.approx(100 * np.mean(colours == "red"))
    assert result["shape_acc"] == pytest.approx(100 * np.mean(shapes == "circle"))


def test_toy_in_process_call_as_the_trainer_makes_it(small_toy):
    torch.manual_seed(0)
    model = towers.create_model("mixer-tiny").train()
    result = zs.zero_shot_eval(ModelEncoder(model, "cpu"), dataset="toy", data=small_toy.val, batch_size=64,
                               workers=0, limit=100, progress=False)
    assert model.training
    assert result["n"] == 100
    for key in ("top1", "top5", "mean_per_class_recall", "top1_ci95", "colour_acc", "shape_acc"):
        assert key in result
    assert result["top1"] <= result["top5"] and result["top1"] <= result["colour_acc"]


def test_bootstrap_ci_is_seeded_and_matches_binomial_width():
    targets = torch.zeros(400, dtype=torch.long)
    ranked = torch.ones(400, 5, dtype=torch.long)
    ranked[::2, 0] = 0  # exactly half right
    first = classification_metrics(ranked, targets, seed=3)
    assert first == classification_metrics(ranked, targets, seed=3)
    low, high = first["top1_ci95"]
    half_width = 1.96 * np.sqrt(0.25 / 400) * 100  # normal approximation: 4.9 points
    assert low < 50 < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


def test_classifier_cache_is_used_and_keyed_by_weights(private_cache):
    torch.manual_seed(0)
    model = towers.create_model("transformer-tiny")
    encoder = ModelEncoder(model, "cpu")
    classnames, templates = ["cat", "dog", "bird"], ["a photo of a {}.", "a {}."]
    built = zero_shot_classifier(encoder, classnames, templates, progress=False)
    assert len(list((private_cache / "zeroshot").glob("*.pt"))) >= 1

    def refuse(texts):
        raise AssertionError("the cached classifier should have been used")

    encoder.encode_text = refuse
    assert torch.equal(zero_shot_classifier(encoder, classnames, templates, progress=False), built)
    with torch.no_grad():
        model.text_projection.mul_(2.0)  # new weights: a new key, so the classifier is rebuilt
    with pytest.raises(AssertionError, match="cached"):
        zero_shot_classifier(encoder, classnames, templates, progress=False)


# --- CLI -------------------------------------------------------------------------------------------

def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        zs.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_missing_data_dir_names_the_layout(tmp_path, capsys):
    code, err = run_cli(["--model", "mixer-tiny", "--data", str(tmp_path / "missing")], capsys)
    assert code == 2 and err.count("\n") == 1 and "ILSVRC val layout" in err and "<wnid>" in err


def test_cli_not_a_wnid_folder(tmp_path, capsys):
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "a.jpg")
    code, err = run_cli(["--model", "mixer-tiny", "--data", str(tmp_path), "--templates", "simple"], capsys)
    assert code == 2 and err.count("\n") == 1 and "'cats' is not an ImageNet-1k wnid" in err


def test_cli_missing_model_and_unknown_option(tmp_path, capsys, shared_data):
    data = str(shared_data / "imagenet_samples")
    code, err = run_cli(["--model", str(tmp_path / "nope.pt"), "--data", data], capsys)
    assert code == 2 and err.count("\n") == 1 and "nope.pt" in err
    code, err = run_cli(["--model", "mixer-tiny", "--data", data, "--top-k", "3"], capsys)
    assert code == 2 and "--top-k" in err
    code, err = run_cli(["--model", "mixer-tiny"], capsys)
    assert code == 2 and "is required with --dataset imagenet" in err and err.count("\n") == 1
    assert "usage:" not in err


def test_cli_writes_a_stamped_result(tmp_path, tiny_arch, shared_data, capsys):
    record = zs.main(["--open-clip", tiny_arch, "--data", str(shared_data / "imagenet_samples"),
                      "--limit", "20", "--templates", "simple", "--results-dir", str(tmp_path)])
    name = f"open_clip-{tiny_arch}-random__imagenet_samples__templates-simple__limit20.json"
    written = json.loads((tmp_path / "imagenet_zeroshot" / name).read_text())
    assert written["metrics"]["top1"] == record["metrics"]["top1"]
    assert written["metrics"]["n"] == 20 and written["settings"]["templates"] == "simple"
    assert written["benchmark_version"] and written["versions"]["open_clip_torch"] == open_clip.__version__
    assert "top1" in capsys.readouterr().out


def test_text_only_model_is_refused():
    with pytest.raises(zs.InputError, match="text-only"):
        zs.zero_shot_eval(FakeEncoder(lambda text: [1.0]), "imagenet", "unused")


def test_template_strings_and_shard_spec_detection(tmp_path):
    assert zeroshot_classifier.template_strings(SIMPLE_IMAGENET_TEMPLATES)[0] == "itap of a {}."
    assert imagenet.is_shard_spec("val/{00000..00009}.tar") and not imagenet.is_shard_spec(tmp_path)
    (tmp_path / "00000.tar").write_bytes(b"")
    assert imagenet.is_shard_spec(tmp_path)  # a folder of shards
