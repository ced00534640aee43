"""benchmarks.data.shards: shard specs, the torture shard set (every kind of bad sample among good ones,
exact survivors and exact counts), colour-mode conversion, and the ordered finite eval pipeline."""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.data.shards import (
    SKIP_KINDS,
    ShardSpecError,
    SkipCounts,
    WorkerCounts,
    eval_dataset,
    eval_loader,
    expand_shards,
    iter_samples,
)


def image_bytes(mode: str = "RGB", fmt: str = "JPEG", colour=(200, 40, 40), size: int = 16, **save) -> bytes:
    image = Image.new("RGB", (size, size), colour)
    image = image.convert(mode) if mode != "RGB" else image
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def write_tar(path: Path, members: list) -> None:
    """members: (name, bytes) regular files or ready TarInfo objects (links etc.)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def good(key: str, caption: str | None = None, ext: str = "jpg", data: bytes | None = None) -> list:
    return [(f"{key}.{ext}", data if data is not None else image_bytes()),
            (f"{key}.txt", (caption or f"good sample {key}").encode()),
            (f"{key}.json", b'{"key": "%s"}' % key.encode())]


def member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (header offset, data offset) in a tar."""
    with tarfile.open(path) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


def write_torture_set(root: Path) -> tuple[str, list[str], dict[str, int]]:
    """Shards holding every kind of bad sample among good ones.
    Returns (spec, keys of the good samples in order, exact counts by kind)."""
    root.mkdir(parents=True, exist_ok=True)
    link = tarfile.TarInfo("t0_link.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "t0_good0.jpg"
    long_caption = " ".join(["word"] * 3000)
    write_tar(root / "00000.tar", [
        *good("t0_good0"),
        ("t0_corrupt.jpg", b"\xff\xd8\xff\xe0 these are not jpeg bytes at all"), ("t0_corrupt.txt", b"BAD 1"),
        ("t0_truncimg.jpg", image_bytes(size=64)[:300]), ("t0_truncimg.txt", b"BAD 2"),
        ("t0_noimage.txt", b"BAD 3"), ("t0_noimage.json", b"{}"),
        *good("t0_gray", ext="jpg", data=image_bytes("L", colour=(200, 200, 200))),
        ("t0_nocaption.jpg", image_bytes()), ("t0_nocaption.json", b"{}"),
        ("t0_empty.jpg", image_bytes()), ("t0_empty.txt", b"  \n\t "),
        ("t0_latin1.jpg", image_bytes()), ("t0_latin1.txt", "BAD caf\xe9".encode("latin-1")),
        link, ("t0_link.txt", b"BAD 4"),
        *good("t0_cmyk", data=image_bytes("CMYK")),
        *good("t0_rgba", ext="png", data=image_bytes("RGBA", "PNG")),
        *good("t0_palette", ext="png", data=image_bytes("P", "PNG", transparency=0)),
        *good("t0_webp", ext="webp", data=image_bytes(fmt="WEBP")),
        *good("t0_long", caption=long_caption),
        ("t0_upper.JPG", image_bytes()), ("t0_upper.txt", b"upper-case extension"),
    ])
    # Shard 1: breaks off inside t1_c's image data; t1_a and t1_b survive.
    write_tar(root / "full1.tar", [*good("t1_a"), *good("t1_b"), *good("t1_c"), *good("t1_d")])
    data = (root / "full1.tar").read_bytes()
    (root / "00001.tar").write_bytes(data[:member_offsets(root / "full1.tar")["t1_c.jpg"][1] + 100])
    # Shard 2: ends exactly at a member boundary, before t2_c (t2_b may be incomplete: dropped).
    write_tar(root / "full2.tar", [*good("t2_a"), *good("t2_b"), *good("t2_c")])
    data = (root / "full2.tar").read_bytes()
    (root / "00002.tar").write_bytes(data[:member_offsets(root / "full2.tar")["t2_c.jpg"][0]])
    # Shard 3: a garbage header block in place of t3_c's header.
    write_tar(root / "full3.tar", [*good("t3_a"), *good("t3_b"), *good("t3_c")])
    data = bytearray((root / "full3.tar").read_bytes())
    start = member_offsets(root / "full3.tar")["t3_c.jpg"][0]
    data[start:start + 512] = b"garbage!" * 64
    (root / "00003.tar").write_bytes(bytes(data))
    # Shard 4 is missing. Shard 5: ends inside t5_c's header block (t5_b dropped). Shard 6: empty file.
    write_tar(root / "full5.tar", [*good("t5_a"), *good("t5_b"), *good("t5_c")])
    data = (root / "full5.tar").read_bytes()
    (root / "00005.tar").write_bytes(data[:member_offsets(root / "full5.tar")["t5_c.jpg"][0] + 200])
    (root / "00006.tar").write_bytes(b"")
    write_tar(root / "00007.tar", [*good("t7_a"), *good("t7_b")])
    for name in ("full1", "full2", "full3", "full5"):
        (root / f"{name}.tar").unlink()

    keys = ["t0_good0", "t0_gray", "t0_cmyk", "t0_rgba", "t0_palette", "t0_webp", "t0_long", "t0_upper",
            "t1_a", "t1_b", "t2_a", "t3_a", "t5_a", "t7_a", "t7_b"]
    counts = {"missing_shard": 1, "truncated_tar": 5, "unreadable_member": 1, "missing_image": 1,
              "corrupt_image": 2, "missing_caption": 1, "empty_caption": 1, "caption_not_utf8": 1,
              "missing_class": 0, "timeout": 0}
    return str(root / "{00000..00007}.tar"), keys, counts


@pytest.fixture()
def torture(tmp_path):
    return write_torture_set(tmp_path / "torture")


def test_torture_set_yields_exactly_the_good_samples_and_counts(torture):
    spec, keys, expected = torture
    counts = SkipCounts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # palette-with-transparency etc. must not warn either
        samples = list(iter_samples(expand_shards(spec), counts))
    assert [s.key for s in samples] == keys
    assert counts.as_dict() == expected
    assert not any(s.caption.startswith("BAD") for s in samples)
    assert all(s.image.mode == "RGB" and s.image.size == (16, 16) for s in samples)
    by_key = {s.key: s for s in samples}
    gray = np.asarray(by_key["t0_gray"].image)
    assert np.abs(gray.astype(int) - 200).max() <= 3  # L -> RGB keeps the value in all three channels
    assert np.asarray(by_key["t0_cmyk"].image)[8, 8, 0] > 150  # still red after CMYK -> RGB
    assert len(by_key["t0_long"].caption.split()) == 3000  # not cut here: the tokenizer truncates


def test_torture_set_through_the_eval_loader_with_two_workers(torture):
    spec, keys, expected = torture
    loader = eval_loader(spec, lambda im: torch.from_numpy(np.asarray(im).copy()), batch_size=4, workers=2)
    seen = [key for _, _, classes, batch_keys in loader for key in batch_keys]
    assert sorted(seen) == sorted(keys)
    assert loader.skipped() == expected  # counts from both worker processes, merged


def test_missing_class_counted_with_class(tmp_path):
    write_tar(tmp_path / "a.tar", [*good("k0"), ("k0.cls", b"3"), *good("k1"), ("k1.cls", b"x"), *good("k2")])
    counts = SkipCounts()
    samples = list(iter_samples([str(tmp_path / "a.tar")], counts, with_class=True))
    assert [(s.key, s.cls) for s in samples] == [("k0", 3)]
    assert counts["missing_class"] == 2
    batches = list(eval_loader(str(tmp_path / "a.tar"), None, with_class=True))
    assert batches[0][2].tolist() == [3] and batches[0][3] == ["k0"]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(buf, format="PNG")
    write_tar(tmp_path / "a.tar", good("k", ext="png", data=buf.getvalue()))
    (sample,) = iter_samples([str(tmp_path / "a.tar")], SkipCounts())
    assert np.asarray(sample.image)[0, 0].tolist() == [40000 >> 8] * 3


# ---------------------------------------------------------------- shard specs


def make_shards(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        write_tar(folder / f"{i:05d}.tar", [m for j in range(3) for m in good(f"s{i}_{j}")])
        paths.append(folder / f"{i:05d}.tar")
    return paths


def test_expand_brace_list_directory_and_glob(tmp_path):
    paths = [str(p) for p in make_shards(tmp_path / "d", 3)]
    (tmp_path / "d" / "00000_stats.json").write_text("{}")
    assert expand_shards(str(tmp_path / "d" / "{00000..00002}.tar")) == paths
    assert expand_shards(f"{paths[2]}::{paths[0]}") == [paths[2], paths[0]]
    assert expand_shards(str(tmp_path / "d")) == paths  # only the .tar files, sorted
    assert expand_shards(str(tmp_path / "d" / "*.tar")) == paths
    assert expand_shards([paths[1], paths[0]]) == [paths[1], paths[0]]
    # Missing members of a pattern are kept: reading counts them as missing_shard.
    assert expand_shards(str(tmp_path / "d" / "{00000..00004}.tar"))[-1].endswith("00004.tar")


@pytest.mark.parametrize("spec", ["nope/{00000..00009}.tar", "missing.tar::also-missing.tar", "EMPTY_DIR"])
def test_no_matching_shard_is_a_one_line_error_naming_the_spec(tmp_path, spec):
    (tmp_path / "empty").mkdir()
    spec = spec.replace("EMPTY_DIR", str(tmp_path / "empty"))
    with pytest.raises(ShardSpecError) as info:
        expand_shards(spec)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message and spec in message


# ---------------------------------------------------------------- eval pipeline


def test_eval_is_ordered_finite_and_repeatable(tmp_path):
    make_shards(tmp_path / "d", 4)
    spec = str(tmp_path / "d")
    expected = [f"s{i}_{j}" for i in range(4) for j in range(3)]
    loader = eval_loader(spec, None, batch_size=5)
    first = [k for batch in loader for k in batch[3]]
    assert first == expected  # shard order, sample order, each once, and the loop ends
    assert [len(b[3]) for b in loader] == [5, 5, 2]
    assert [k for batch in loader for k in batch[3]] == first
    assert loader.skipped() == dict.fromkeys(SKIP_KINDS, 0)


def test_two_workers_see_disjoint_samples(tmp_path):
    make_shards(tmp_path / "d", 5)
    batches = list(eval_loader(str(tmp_path / "d"), None, batch_size=2, workers=2))
    keys = [k for b in batches for k in b[3]]
    assert len(keys) == len(set(keys)) == 15
    # Round-robin: batch 0 from worker 0 (shards 0, 2, 4), batch 1 from worker 1 (shards 1, 3).
    assert batches[0][3] == ["s0_0", "s0_1"] and batches[1][3] == ["s1_0", "s1_1"]
    shard_of = {k: int(k[1]) for k in keys}
    worker0 = [k for k in keys if shard_of[k] % 2 == 0]
    assert worker0 == sorted(worker0, key=lambda k: (shard_of[k], k))


def test_eval_dataset_splits_by_rank(tmp_path):
    make_shards(tmp_path / "d", 3)
    parts = [[k for b in eval_dataset(str(tmp_path / "d"), None, 4, rank=r, world_size=2) if b[3]
              for k in b[3]] for r in range(2)]
    assert parts[0] == [f"s{i}_{j}" for i in (0, 2) for j in range(3)]
    assert parts[1] == [f"s1_{j}" for j in range(3)]


def test_worker_counts_merge_latest_per_worker():
    merged = WorkerCounts()
    merged.update(0, {"corrupt_image": 1})
    merged.update(1, {"corrupt_image": 2, "missing_shard": 1})
    merged.update(0, {"corrupt_image": 4})  # cumulative: replaces worker 0's earlier snapshot
    assert merged.merged() == {**dict.fromkeys(SKIP_KINDS, 0), "corrupt_image": 6, "missing_shard": 1}
    with pytest.raises(ValueError):
        SkipCounts().add("not_a_kind")


class _MetadataCalls:
    """Counts the filesystem metadata calls (stat, lstat, scandir, listdir) made through `os`: what
    os.path.isdir/isfile/exists and glob use, and each one a round trip on a shared filesystem."""

    def __init__(self, monkeypatch):
        import os

        self.calls = 0
        for name in ("stat", "lstat", "scandir", "listdir"):
            monkeypatch.setattr(os, name, self._counted(getattr(os, name)))

    def _counted(self, function):
        def counted(*args, **kwargs):
            self.calls += 1
            return function(*args, **kwargs)
        return counted


def test_startup_at_laion_s_41408_shard_names_costs_a_few_metadata_calls_not_one_per_name(tmp_path,
                                                                                           monkeypatch):
    from launch.data import data_identity, get_train_loader

    folder = tmp_path / "laion400m"
    folder.mkdir()
    for i in (0, 1, 41407):  # the others are missing: a reader counts them as missing_shard
        (folder / f"{i:05d}.tar").write_bytes(b"")
    spec = f"{folder}/{{00000..41407}}.tar"
    counter = _MetadataCalls(monkeypatch)
    urls = expand_shards(spec)
    expand_calls = counter.calls
    counter.calls = 0
    identity = data_identity(spec)  # what launch/train.py does at startup on every rank
    get_train_loader(spec, image_size=32, batch_size=4, workers=0, seed=0)
    print(f"metadata calls: expand_shards {expand_calls}, a rank's startup (data_identity + "
          f"get_train_loader) {counter.calls}")
    assert urls == [f"{folder}/{i:05d}.tar" for i in range(41408)] and identity["shards"] == 41408
    assert expand_calls <= 2 and counter.calls <= 10  # one listing of the folder per expansion


def test_shard_specs_name_folders_files_and_globs_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shards = tmp_path / "shards"
    (shards / "sub").mkdir(parents=True)
    for name in ("a.tar", "b.tar", "sub/c.tar"):
        (shards / name).write_bytes(b"")
    (shards / "broken.tar").symlink_to(tmp_path / "nowhere.tar")
    assert expand_shards("shards/sub") == ["shards/sub/c.tar"]  # a folder: its .tar files
    assert expand_shards("shards/{sub,a.tar}") == ["shards/sub/c.tar", "shards/a.tar"]
    assert expand_shards("shards/sub/") == ["shards/sub/c.tar"]
    assert expand_shards(f"{shards}/[ab].tar") == [f"{shards}/a.tar", f"{shards}/b.tar"]
    with pytest.raises(ShardSpecError, match="no shard file matches 'shards/broken.tar'"):
        expand_shards("shards/broken.tar")  # a broken link is no shard file
    with pytest.raises(ShardSpecError, match="absent"):
        expand_shards("absent/{0..3}.tar")
