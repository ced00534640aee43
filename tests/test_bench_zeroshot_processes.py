"""ImageNet zero-shot split over processes, and ImageNetV2's class-index folders: the same images,
labels and predictions as one process on the ILSVRC layout (`../shared/data/imagenet_samples`)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import zeroshot_worker
from open_clip import IMAGENET_CLASSNAMES, SIMPLE_IMAGENET_TEMPLATES
from PIL import Image
from test_multinode import free_port

import towers
from benchmarks import imagenet_zeroshot as zs
from benchmarks.data.imagenet import imagefolder_batches, share_of_batches
from benchmarks.encoder import FakeEncoder, load_our_model
from benchmarks.zeroshot_classifier import class_blocks

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "zeroshot_worker.py"
LIMIT = 96  # images (evenly spaced over the 1000 classes): 6 batches of 16


def ilsvrc_labels(root: Path) -> dict[str, int]:
    """wnid -> class index, read from classes.tsv (independent of the folder reader)."""
    rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
    return {wnid: int(index) for index, wnid, _name in rows}


@pytest.fixture(scope="module")
def imagenet_v2(shared_data, tmp_path_factory) -> Path:
    """imagenet_samples laid out as ImageNetV2 releases it: DIR/<class index>/<image>."""
    source = shared_data / "imagenet_samples"
    root = tmp_path_factory.mktemp("imagenetv2")
    for wnid, index in ilsvrc_labels(source).items():
        (root / str(index)).mkdir()
        for image in (source / wnid).iterdir():
            (root / str(index) / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)  # one text and one image block: the test is of the split, not of the model
    model = towers.create_model("transformer-tiny", image_overrides={"layers": 1},
                                text_overrides={"layers": 1})
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"model_config": model.model_config, "state_dict": model.state_dict()}, path)
    return path


def test_imagenet_v2_folders_are_read_by_class_index(shared_data, imagenet_v2):
    source = shared_data / "imagenet_samples"
    loader, n = imagefolder_batches(imagenet_v2, None, batch_size=1000, workers=0, limit=None)
    assert n == 1000
    dataset = loader.dataset.dataset.dataset  # _WithIds -> Subset -> ImageNetFolder
    labels = ilsvrc_labels(source)
    for path, target in dataset.samples:  # every image labelled as its ILSVRC synset folder says
        wnid = Path(path).resolve().parent.name
        assert target == labels[wnid] == int(Path(path).parent.name)
    assert [t for _, t in dataset.samples] == list(range(1000))  # class order: "2" before "10"


def test_imagenet_v2_layout_scores_like_the_ilsvrc_layout(shared_data, imagenet_v2):
    """A "perfect" encoder that knows each image's ILSVRC class (from classes.tsv) scores the V2 folder
    as it scores the ILSVRC folder, image for image."""
    source = shared_data / "imagenet_samples"
    classes_by_prompt: dict[str, list[int]] = {}  # OpenAI's names repeat "missile" and "sunglasses"
    for index, name in enumerate(IMAGENET_CLASSNAMES):
        for template in SIMPLE_IMAGENET_TEMPLATES:
            classes_by_prompt.setdefault(template(name), []).append(index)
    perfect = FakeEncoder(lambda text: one_hot(classes_by_prompt[text]),
                          lambda image: one_hot([pixels[key(image)]]))
    pixels = {}
    for wnid, index in ilsvrc_labels(source).items():
        with Image.open(next((source / wnid).iterdir())) as image:
            pixels[key(perfect.preprocess(image))] = index
    kwargs = dict(batch_size=32, limit=LIMIT, templates="simple", progress=False, keep_predictions=True)
    ilsvrc = zs.zero_shot_eval(perfect, "imagenet", source, **kwargs)
    v2 = zs.zero_shot_eval(perfect, "imagenet", imagenet_v2, **kwargs)
    assert v2["predictions"] == ilsvrc["predictions"]  # same images, same labels, same ranking
    assert v2["top1"] == ilsvrc["top1"] >= 100 * (LIMIT - 2) / LIMIT and v2["top5"] == 100.0
    assert v2["n"] == LIMIT and len(set(v2["predictions"]["targets"])) == LIMIT


def key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def one_hot(indices: list[int]) -> list[float]:
    vector = [0.0] * 1000
    for index in indices:
        vector[index] = 1.0
    return vector


def test_shares_cover_every_batch_once():
    assert share_of_batches(10, 3, 0, 2) == [0, 1, 2, 6, 7, 8]
    assert share_of_batches(10, 3, 1, 2) == [3, 4, 5, 9]
    assert [list(b) for b in class_blocks(25, 1, 2)] == [list(range(10, 20))]
    assert sorted(i for r in range(3) for b in class_blocks(1000, r, 3) for i in b) == list(range(1000))


def _run(tmp_path: Path, processes: int, model: Path, data: Path) -> dict:
    out = tmp_path / f"zeroshot-{processes}.json"
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(REPO / "launch" / "accelerate" / "cpu.yaml"),
                "--num_processes", str(processes), "--main_process_port", str(free_port())]
    result = subprocess.run(launcher + [str(WORKER), "--model", str(model), "--data", str(data),
                                        "--limit", str(LIMIT), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["world_size"] == processes  # two processes really ran and joined one group
    return written


@pytest.mark.slow
def test_two_processes_score_exactly_like_one(tmp_path, checkpoint, shared_data):
    data = shared_data / "imagenet_samples"
    two = _run(tmp_path, 2, checkpoint, data)
    # the one-process reference runs here, at the one thread each worker runs (tests/zeroshot_worker.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = zeroshot_worker.score(str(checkpoint), str(data), LIMIT)
    finally:
        torch.set_num_threads(threads)
    one = json.loads(json.dumps(one))  # as the worker's file holds it (tuples become lists)
    print(f"top-1 1 process {one['top1']:.2f}%, 2 processes {two['top1']:.2f}% (n={one['n']})")
    assert two["processes"] == 2 and two["n"] == one["n"] == LIMIT
    assert two["predictions"] == one["predictions"]  # every image's top-5 classes, in order
    for key in ("top1", "top5", "mean_per_class_recall", "top1_ci95"):
        assert two[key] == one[key]


def test_every_checkpoint_scores_each_saved_step(tmp_path, capsys):
    from benchmarks.data import toy as toy_data
    from launch.checkpointing import save_checkpoint

    toy = toy_data.ensure_toy(tmp_path / "toy", num_train=8, num_val=64, shard_size=64, progress=False)
    run = tmp_path / "runs" / "tiny"
    for step in (2, 10):  # two different models, as two saved steps of one run
        torch.manual_seed(step)
        model = towers.create_model("mixer-tiny", image_overrides={"layers": 1}, text_overrides={"layers": 1})
        save_checkpoint(run / "checkpoints", step, {"model_config": model.model_config,
                                                    "state_dict": model.state_dict(), "step": step,
                                                    "samples_seen": step * 16})
    records = zs.main(["--model", str(run), "--every-checkpoint", "--dataset", "toy", "--data", toy.val,
                       "--results-dir", str(tmp_path / "scores")])
    assert [r["model"]["step"] for r in records] == [2, 10]
    assert [r["model"]["samples_seen"] for r in records] == [32, 160]
    files = sorted((tmp_path / "scores" / "toy_zeroshot").glob("*.json"))
    # one file per step; the name also carries the toy folder scored (not the default cache)
    assert [f.name for f in files] == ["tiny-step_00000002__toy-0-v5-8x64s64-val.json",
                                       "tiny-step_00000010__toy-0-v5-8x64s64-val.json"]
    for record in records:  # each step's numbers are that checkpoint's own
        encoder = load_our_model(record["model"]["checkpoint"], "cpu")
        alone = zs.zero_shot_eval(encoder, "toy", toy.val, progress=False)
        assert record["metrics"]["top1"] == alone["top1"] and record["metrics"]["top5"] == alone["top5"]
    # two models, not one scored twice (random models on 64 images may tie on top-5 by chance)
    assert records[0]["model"]["checkpoint_sha256"] != records[1]["model"]["checkpoint_sha256"]
    assert "step 2  toy zero-shot" in capsys.readouterr().out


def test_every_checkpoint_needs_a_run_dir(capsys):
    with pytest.raises(SystemExit) as exit_info:
        zs.main(["--model", "mixer-tiny", "--every-checkpoint", "--dataset", "toy"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--every-checkpoint" in err
