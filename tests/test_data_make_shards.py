"""benchmarks.data.make_shards: TSV + images -> img2dataset-layout shards that the loaders read back with the
same captions, bytes and classes; one-line errors naming the row for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_data_shards import image_bytes

from benchmarks.data import make_shards
from benchmarks.data.shards import SkipCounts, eval_loader, expand_shards, iter_shard

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path) -> dict[str, bytes]:
    files = {"a.jpg": image_bytes(colour=(255, 0, 0)), "b.png": image_bytes(fmt="PNG", colour=(0, 255, 0)),
             "sub/c.JPEG": image_bytes(colour=(0, 0, 255)), "d.webp": image_bytes(fmt="WEBP")}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


ROWS = [("a.jpg", "a red square"), ("b.png", "ein grünes Quadrat 🟩"), ("sub/c.JPEG", "a blue \"square\""),
        ("a.jpg", "the red one again"), ("d.webp", "x " * 400)]


def test_round_trip_keeps_captions_bytes_and_order(tmp_path, capsys):
    files = make_images(tmp_path / "img")
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("file\tcaption\n" + "".join(f"{f}\t{c}\n" for f, c in ROWS), encoding="utf-8")
    make_shards.main(["--images", str(tmp_path / "img"), "--captions", str(tsv),
                      "--out", str(tmp_path / "out"), "--shard-size", "2"])
    out = capsys.readouterr().out
    assert "wrote 5 samples in 3 shard(s)" in out and f"{tmp_path / 'out'}/{{00000..00002}}.tar" in out
    batches = list(eval_loader(str(tmp_path / "out"), None, batch_size=10))
    captions, keys = batches[0][1], batches[0][3]
    assert captions == [c.strip() for _, c in ROWS]
    assert keys == ["000000", "000001", "000010", "000011", "000020"]  # img2dataset-style keys
    raws = [raw for url in expand_shards(str(tmp_path / "out")) for raw in iter_shard(url, SkipCounts())]
    extensions = [next(e for e in ("jpg", "png", "webp") if e in raw) for raw in raws]
    assert extensions == ["jpg", "png", "jpg", "jpg", "webp"]
    assert [raw[e] for raw, e in zip(raws, extensions, strict=True)] == [files[f] for f, _ in ROWS]
    assert all(set(raw) >= {"txt", "json"} for raw in raws)


def test_class_column_becomes_cls(tmp_path):
    make_images(tmp_path / "img")
    tsv = tmp_path / "c.tsv"
    tsv.write_text("a.jpg\tred\t7\nb.png\tgreen\t0\n", encoding="utf-8")
    make_shards.main(["--images", str(tmp_path / "img"), "--captions", str(tsv),
                      "--out", str(tmp_path / "o")])
    (batch,) = eval_loader(str(tmp_path / "o"), None, with_class=True)
    assert batch[1] == ["red", "green"] and batch[2].tolist() == [7, 0]


@pytest.mark.parametrize(("content", "expected"), [
    ("a.jpg\tok\nmissing.jpg\tnope\n", "c.tsv:2: image not found: "),
    ("file\tcaption\na.jpg\tok\nb.png\n", "c.tsv:3: expected 2 or 3 tab-separated fields"),
    ("a.jpg\tok\tseven\n", "c.tsv:1: class 'seven' is not an integer"),
    ("a.jpg\t   \n", "c.tsv:1: empty caption"),
    ("notes.txt\tcaption\n", "c.tsv:1: notes.txt: unsupported image type"),
])
def test_bad_rows_are_one_line_errors_and_nothing_is_written(tmp_path, capsys, content, expected):
    make_images(tmp_path / "img")
    (tmp_path / "img" / "notes.txt").write_text("hi")
    (tmp_path / "c.tsv").write_text(content, encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        make_shards.main(["--images", str(tmp_path / "img"), "--captions", str(tmp_path / "c.tsv"),
                          "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and err.startswith("error: ") and expected in err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_an_output_folder_with_shards_and_runs_as_a_module(tmp_path):
    make_images(tmp_path / "img")
    (tmp_path / "c.tsv").write_text("a.jpg\tred\n", encoding="utf-8")
    command = [sys.executable, "-m", "benchmarks.data.make_shards", "--images", str(tmp_path / "img"),
               "--captions", str(tmp_path / "c.tsv"), "--out", str(tmp_path / "o")]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and (tmp_path / "o" / "00000.tar").is_file()
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "already holds .tar files" in second.stderr
