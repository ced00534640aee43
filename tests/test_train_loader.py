"""launch.data: the resampled training stream is endless and deterministic, resumes exactly from any
batch, differs per rank, never lets a bad sample through, exposes the skip counts of its workers;
a bad --train-data is a one-line error naming the pattern."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_shards import good, image_bytes, write_tar, write_torture_set

import towers
from benchmarks.data import toy as toy_data
from benchmarks.data.shards import SKIP_KINDS, ShardSpecError
from launch import data as launch_data
from launch.data import get_train_loader

REPO = Path(__file__).resolve().parents[1]
EOT = 49407


def write_dataset(folder: Path, shards: int = 4, per_shard: int = 12) -> tuple[str, list[str]]:
    """Shards of distinct, coloured 16 px images whose captions name their sample."""
    folder.mkdir(parents=True, exist_ok=True)
    captions = []
    for s in range(shards):
        members = []
        for i in range(per_shard):
            caption = f"sample {s} {i}"
            captions.append(caption)
            members += good(f"{s:05d}{i:04d}", caption,
                            data=image_bytes(colour=(20 * s, 20 * i, 128), size=24))
        write_tar(folder / f"{s:05d}.tar", members)
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar"), captions


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shards"))


def caption_ids(tokens: torch.Tensor, captions: list[str]) -> list[int]:
    """Which caption each token row is (by comparing with the tokenizer's own output)."""
    table = {tuple(row.tolist()): i for i, row in enumerate(towers.tokenize(captions))}
    return [table[tuple(row.tolist())] for row in tokens]


def take(loader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def loader_for(spec: str, **kw):
    args = {"image_size": 16, "batch_size": 8, "workers": 0, "seed": 0,
            "shuffle_buffer": 20, **kw}
    return get_train_loader(spec, **args)


def test_resampled_stream_is_endless_and_shaped(dataset):
    spec, captions = dataset
    loader = loader_for(spec, world_size=2)
    batches = take(loader, 40)  # 320 samples from a 48-sample set: it keeps going
    images, tokens = batches[0]
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.float32
    assert tokens.shape == (8, 77) and tokens.dtype == torch.long
    seen = [i for _, t in batches for i in caption_ids(t, captions)]
    assert len(set(seen)) > 40  # the shuffle and resampling reach (nearly) the whole set


@pytest.mark.parametrize("workers", [0, 2])
def test_same_arguments_same_batches(dataset, workers):
    spec, _ = dataset
    a, b = take(loader_for(spec, workers=workers), 6), take(loader_for(spec, workers=workers), 6)
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)


@pytest.mark.parametrize(("workers", "start"), [(0, 5), (1, 3), (2, 4), (2, 7), (2, 1)])
def test_state_dict_resumes_exactly(dataset, workers, start):
    spec, _ = dataset
    full = take(loader_for(spec, workers=workers), start + 4)
    first = loader_for(spec, workers=workers)
    take(first, start)
    state = first.state_dict()
    assert state["batches"] == start and state["workers"] == workers
    resumed_loader = loader_for(spec, workers=workers, state=state)
    resumed = take(resumed_loader, 4)
    for (ia, ta), (ib, tb) in zip(full[start:], resumed, strict=True):
        assert torch.equal(ta, tb)
        assert torch.equal(ia, ib)  # the random crops too
    assert resumed_loader.state_dict()["batches"] == start + 4


class CountingFile(io.FileIO):
    """A local shard file that counts the bytes read from it (below the buffered reader)."""

    total = 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        CountingFile.total += n or 0
        return n


def count_reads(monkeypatch) -> type[CountingFile]:
    import webdataset

    CountingFile.total = 0
    monkeypatch.setattr(webdataset, "gopen", lambda url, mode="rb", **_: io.BufferedReader(CountingFile(url)))
    return CountingFile


def test_resume_reads_the_buffers_bytes_not_the_shards_before_them(tmp_path, monkeypatch):
    # 2 shards of 150 samples of about 1.1 kB; a buffer of 20; 40 batches of 8 in: 340 samples read,
    # the current shard 190 in. The old state (member ordinals) re-read every prefix up to the
    # buffer's samples; the offsets in the state read each buffered sample (and 8 KiB of read-ahead)
    spec, _ = write_dataset(tmp_path / "big", shards=2, per_shard=150)
    first = loader_for(spec)
    take(first, 40)
    state = first.state_dict()
    role = state["roles"][0]
    assert role["buffer"].shape == (19, 4) and role["offset"] >= 0
    sample_span = max(int(end - offset) for _, _, offset, end in role["buffer"].tolist() if end >= 0)
    expected = take(loader_for(spec, state=state), 3)
    counter = count_reads(monkeypatch)
    by_offset = take(loader_for(spec, state=state), 3)
    offset_bytes = counter.total
    older = dict(role, buffer=role["buffer"][:, :2])  # an older checkpoint's state: no offsets
    del older["offset"]
    counter.total = 0
    by_ordinal = take(loader_for(spec, state=dict(state, roles=[older])), 3)
    ordinal_bytes = counter.total
    print(f"restore + 3 batches read {offset_bytes} bytes by offset, {ordinal_bytes} by member ordinal")
    for (images, tokens), (images_o, tokens_o), (images_p, tokens_p) in zip(expected, by_offset, by_ordinal,
                                                                            strict=True):
        assert torch.equal(images, images_o) and torch.equal(tokens, tokens_o)
        assert torch.equal(images, images_p) and torch.equal(tokens, tokens_p)
    # 19 buffered samples, the reopened shard's last sample, 3 x 8 samples taken from the shard
    assert offset_bytes <= (19 + 1 + 24) * (sample_span + 8192)
    assert ordinal_bytes > 3 * offset_bytes


def test_a_state_of_another_worker_count_is_refused(dataset):
    spec, _ = dataset
    first = loader_for(spec, workers=2)
    take(first, 3)
    with pytest.raises(ValueError, match="state of 2 workers over 4 shards given to a loader of 1 workers"):
        loader_for(spec, workers=1, state=first.state_dict())


def test_ranks_and_seeds_draw_different_streams(dataset):
    spec, captions = dataset
    def order(**kw):
        return [i for _, t in take(loader_for(spec, world_size=2, **kw), 3) for i in caption_ids(t, captions)]

    assert order(rank=0) != order(rank=1)
    assert order(rank=0, seed=1) != order(rank=0)
    assert order(rank=1) == order(rank=1)


def test_random_crops_differ_between_batches(tmp_path):
    """One image repeated: every batch holds the same samples, so only the crops can differ."""
    buf = io.BytesIO()
    Image.fromarray(np.arange(48 * 48 * 3, dtype=np.uint8).reshape(48, 48, 3)).save(buf, format="PNG")
    write_tar(tmp_path / "a.tar", [m for i in range(8) for m in good(f"k{i}", "same", "png", buf.getvalue())])
    batches = take(loader_for(str(tmp_path / "a.tar"), batch_size=8), 3)
    assert not torch.equal(batches[0][0], batches[1][0]) and not torch.equal(batches[1][0], batches[2][0])
    assert not torch.equal(batches[0][0][0], batches[0][0][1])


@pytest.mark.parametrize("workers", [0, 1])
def test_main_process_rng_is_left_alone(dataset, workers):
    spec, _ = dataset
    torch.manual_seed(123)
    state = torch.get_rng_state()
    take(loader_for(spec, workers=workers), 3)
    assert torch.equal(torch.get_rng_state(), state)


def test_no_bad_sample_gets_through_and_worker_counts_are_merged(tmp_path):
    spec, keys, expected = write_torture_set(tmp_path / "torture")
    loader = loader_for(spec, workers=2, batch_size=4)
    good_captions = [f"good sample {k}" for k in keys if k not in ("t0_long", "t0_upper")]
    good_captions += [" ".join(["word"] * 3000), "upper-case extension"]
    seen = set()
    for _, tokens in take(loader, 40):
        seen.update(caption_ids(tokens, good_captions))  # KeyError if a bad caption came through
    assert len(seen) == len(good_captions)
    skipped = loader.skipped()
    assert set(skipped) == set(SKIP_KINDS)
    for kind, n in expected.items():  # resampling reads shards several times: each kind keeps coming
        assert (skipped[kind] >= n) if n else (skipped[kind] == 0), kind
    long_row = towers.tokenize([" ".join(["word"] * 3000)])[0]
    assert long_row[-1] == EOT and (long_row != 0).all()  # truncated by the tokenizer, EOT kept


def test_all_bad_data_stops_with_an_error_instead_of_hanging(tmp_path):
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(RuntimeError, match="in a row gave no sample"):
        take(loader_for(str(tmp_path / "empty.tar")), 1)


def test_default_is_the_toy_train_split(tmp_path, monkeypatch):
    small = toy_data.ensure_toy(tmp_path, num_train=64, num_val=64, shard_size=32, progress=False)
    monkeypatch.setattr(launch_data, "ensure_toy", lambda **kw: small)
    images, tokens = take(loader_for(None, image_size=64), 1)[0]
    assert images.shape == (8, 3, 64, 64)
    texts = [open_clip_decode(row) for row in tokens]
    assert all(any(name in text for name in toy_data.CLASS_NAMES) for text in texts)


def open_clip_decode(row: torch.Tensor) -> str:
    from open_clip.tokenizer import _tokenizer

    return _tokenizer.decode([t for t in row.tolist() if t not in (0, EOT, EOT - 1)])


@pytest.mark.parametrize("train", [True, False])
def test_uint8_batches_finish_to_the_whole_transforms_exact_bits(train):
    # Workers send uint8 images and the main process finishes them: that must be invisible.
    transform = towers.image_transform(32, train=train)
    uint8_part, finish = launch_data.Uint8Images.split(transform)
    assert finish is not None
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 50, 3), dtype=np.uint8)) for i in range(6)]
    torch.manual_seed(3)
    expected = torch.stack([transform(image) for image in images])
    torch.manual_seed(3)
    halves = torch.stack([uint8_part(image) for image in images])
    assert halves.dtype == torch.uint8
    assert torch.equal(finish(halves), expected)
    assert expected.min() < -1.5 and expected.max() > 1.5  # normalised, not just scaled to [0, 1]


def test_a_transform_without_the_usual_ending_runs_whole_in_the_worker():
    transform = towers.image_transform(32, train=True)
    shortened = type(transform)(transform.transforms[:-1])  # no Normalize
    assert launch_data.Uint8Images.split(shortened) == (shortened, None)


def test_no_matching_shard_raises_and_the_cli_says_one_line():
    with pytest.raises(ShardSpecError, match=r"nope/\{00000\.\.00009\}\.tar"):
        loader_for("nope/{00000..00009}.tar")
    command = [sys.executable, "-m", "benchmarks.performance.loader_bench",
               "--data", "nope/{00000..00009}.tar"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data") and "nope/{00000..00009}.tar" in lines[0]


def test_a_compressed_shard_set_resumes_exactly(tmp_path):
    # .tar.gz shards cannot seek: the restore reads each shard up to its buffered samples
    import gzip

    spec, _ = write_dataset(tmp_path / "plain", shards=3, per_shard=12)
    for tar in sorted((tmp_path / "plain").glob("*.tar")):
        (tmp_path / f"{tar.name}.gz").write_bytes(gzip.compress(tar.read_bytes()))
    spec = str(tmp_path / "{00000..00002}.tar.gz")
    full = take(loader_for(spec), 9)
    first = loader_for(spec)
    take(first, 5)
    resumed = take(loader_for(spec, state=first.state_dict()), 4)
    for (images, tokens), (images_r, tokens_r) in zip(full[5:], resumed, strict=True):
        assert torch.equal(images, images_r) and torch.equal(tokens, tokens_r)
