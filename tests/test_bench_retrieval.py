"""Retrieval runner: recall@k by hand, a perfect fake on the shared COCO captions, the toy split, the
query grid PNG, and CLI errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import retrieval
from benchmarks.data import captions
from benchmarks.data import toy as toy_data
from benchmarks.encoder import FakeEncoder


def pixel_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def test_recall_at_k_by_hand():
    # 3 images, 2 captions each (captions 2i, 2i+1 belong to image i)
    data = captions.CaptionedImages("hand", ["a", "b", "c"], [f"t{i}" for i in range(6)],
                                     [0, 0, 1, 1, 2, 2], lambda i: None)
    similarity = torch.tensor([
        [0.9, 0.1, 0.8, 0.0, 0.0, 0.0],  # image 0: own caption first -> hit at 1
        [0.9, 0.0, 0.1, 0.2, 0.0, 0.0],  # image 1: own captions ranked 3rd/2nd -> hit at 5 not 1
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # image 2: all tied -> stable order puts t4 5th: hit at 5
    ])
    result = retrieval.recall_at_k(similarity, retrieval.positives(data), ks=(1, 5, 10))
    assert result["i2t_R@1"] == pytest.approx(100 / 3)
    assert result["i2t_R@5"] == result["i2t_R@10"] == pytest.approx(100.0)
    # texts: t0 -> image 0 ties image 1 (0.9), stable: image 0 first -> hit@1; t1 hit@1 (0.1 vs 0 vs 0);
    # t2 -> image 0 (0.8) above image 1 (0.1): miss@1; t3 -> image 1 first: hit; t4, t5 all 0: image 0
    # first, image 2 third: miss@1
    assert result["t2i_R@1"] == pytest.approx(100 * 3 / 6)
    assert result["t2i_R@5"] == pytest.approx(100.0)


def test_identical_captions_count_every_image_carrying_them():
    data = captions.CaptionedImages("dup", ["a", "b"], ["red circle", "red circle"], [0, 1], lambda i: None)
    truth = retrieval.positives(data)
    assert truth.tolist() == [[True, True], [True, True]]


def test_perfect_encoder_on_shared_captions_scores_100(shared_data):
    data = captions.load_caption_folder(shared_data / "captions")
    assert len(data.image_ids) == 159 and len(data.captions) == 795
    n = len(data.image_ids)
    by_caption = dict(zip(data.captions, data.caption_image, strict=True))
    perfect = FakeEncoder(lambda text: np.eye(n)[by_caption[text]],
                          lambda image: np.eye(n)[pixels[pixel_key(image)]], image_size=24)
    pixels = {pixel_key(perfect.preprocess(data.open_image(i))): i for i in range(n)}
    assert len(pixels) == n
    metrics, _ = retrieval.retrieval_eval(perfect, data, batch_size=64)
    assert all(metrics[f"{d}_R@{k}"] == 100.0 for d in ("i2t", "t2i") for k in (1, 5, 10))

    constant = FakeEncoder(lambda text: [1.0], lambda image: [1.0], image_size=8)
    metrics, _ = retrieval.retrieval_eval(constant, data, batch_size=64)
    # all tied: every image ranks captions 0..k-1 first, so only image 0 hits at k <= 5 (1 of 159 images);
    # every caption ranks image 0 first, so only image 0's 5 captions hit at 1 (5 of 795)
    assert metrics["i2t_R@1"] == pytest.approx(100 / 159)
    assert metrics["i2t_R@10"] == pytest.approx(200 / 159)
    assert metrics["t2i_R@1"] == pytest.approx(100 * 5 / 795)


def test_toy_split_and_query_grid_png(tmp_path):
    toy = toy_data.ensure_toy(tmp_path / "toy", num_train=8, num_val=64, shard_size=64, progress=False)
    data = captions.load_toy_split(toy.val, limit=40)
    assert len(data.image_ids) == len(data.captions) == 40
    red = FakeEncoder(lambda text: [1.0, 0.0, 0.0] if "red" in text else [0.0, 1.0, 1.0],
                      lambda image: image.mean((1, 2)))  # mean RGB: red images point along the red axis
    metrics, features = retrieval.retrieval_eval(red, data, batch_size=16)
    assert metrics["images"] == 40 and 0 <= metrics["t2i_R@1"] <= 100
    out = tmp_path / "grid.png"
    top = retrieval.query_grid(red, data, features, "a red circle", out)
    assert len(top) == 9 and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600
    # the highest-scoring image is the reddest one in the split
    redness = [float(torch.nn.functional.normalize(features[i], dim=0)[0]) for i in range(40)]
    assert data.image_ids.index(top[0][0]) == int(np.argmax(redness))


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        retrieval.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    code, err = run_cli(["--model", "mixer-tiny", "--data", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "captions.tsv" in err and "file<TAB>caption" in err
    code, err = run_cli(["--model", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and err.count("\n") == 1 and "missing.pt" in err
    code, err = run_cli(["--model", "mixer-tiny", "--recall-at", "3"], capsys)
    assert code == 2 and "--recall-at" in err


def small_caption_folder(source, target, images: int = 12):
    """The first images of the shared COCO subset with their captions (a fast CLI run)."""
    lines = (source / "captions.tsv").read_text().splitlines()
    keep = [line for line in lines[1:] if line.split("\t")[0] in
            sorted({row.split("\t")[0] for row in lines[1:]})[:images]]
    (target / "images").mkdir(parents=True)
    for file in {line.split("\t")[0] for line in keep}:
        (target / file).write_bytes((source / file).read_bytes())
    (target / "captions.tsv").write_text("\n".join([lines[0], *keep]) + "\n")
    return target


def test_cli_run_with_query_writes_json_and_png(tmp_path, shared_data, capsys):
    data = small_caption_folder(shared_data / "captions", tmp_path / "captions")
    record = retrieval.main(["--model", "transformer-tiny", "--data", str(data),
                             "--query", "a red circle", "--results-dir", str(tmp_path)])
    written = json.loads((tmp_path / "retrieval" / "transformer-tiny-random__captions.json").read_text())
    assert written["metrics"]["i2t_R@1"] == record["metrics"]["i2t_R@1"]
    assert written["metrics"]["images"] == 12 and written["metrics"]["texts"] == 60
    grid = tmp_path / "retrieval" / "transformer-tiny-random_a_red_circle.png"
    assert grid.is_file() and written["metrics"]["query"]["grid"] == str(grid)
    assert len(written["metrics"]["query"]["top"]) == 9
    assert written["model_id"] == "transformer-tiny-random" and written["settings"]["query"] == "a red circle"
