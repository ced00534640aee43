"""launch.decoders through the training loader: every decoder draws the same crop boxes from the same
stream state as `pil` (today's path); torchvision's decode is PIL's pixels; pil-draft is pil bit for bit
when no reduction applies and close when it does; `device` (run on the CPU here) is the torchvision
decoder bit for bit, skips and counts bad JPEGs with whole batches, and resumes exactly; on CUDA it
decodes on a stream of its own (the stream logic, with fakes); the recipe
field and its `--decode-on-device` flag; the decode bench end to end at toy size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_shards import good, write_tar
from torchvision.io import ImageReadMode, decode_jpeg

import towers
from benchmarks.data.jpeg_shards import make_image
from benchmarks.data.shards import load_rgb
from benchmarks.performance import decode_bench
from launch.config import parse_experiment
from launch.data import get_train_loader
from launch.decoders import DECODERS, DeviceDecoder, pack_device_batch

SIZE = 32  # output crop side in these tests


def write_shards(folder, side: int, shards: int = 3, per_shard: int = 12, bad_every: int = 0,
                 seed: int = 0) -> tuple[str, set[str]]:
    """Shards of smooth random side x side JPEGs; every `bad_every`-th one cut in half (its header
    intact, so only a full decode finds it). Returns the spec and the bad samples' captions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, bad = np.random.default_rng(seed), set()
    for s in range(shards):
        members = []
        for i in range(per_shard):
            data, caption = make_image(rng, side), f"sample {s} {i}"
            if bad_every and (s * per_shard + i) % bad_every == bad_every - 1:
                data, caption = data[: len(data) // 2], f"bad sample {s} {i}"
                bad.add(caption)
            members += good(f"{s:05d}{i:04d}", caption, data=data)
        write_tar(folder / f"{s:05d}.tar", members)
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar"), bad


def batches(spec: str, decoder: str, n: int = 3, seed: int = 0, **kw) -> list[tuple[torch.Tensor, ...]]:
    loader = get_train_loader(spec, image_size=SIZE, batch_size=8, workers=kw.pop("workers", 0), seed=seed,
                              shuffle_buffer=16, decoder=decoder, finish_images=False, **kw)
    it = iter(loader)
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def small(tmp_path_factory):  # 40 px originals: no reduced-size decode can serve a 32 px crop
    return write_shards(tmp_path_factory.mktemp("small"), side=40)[0]


@pytest.fixture(scope="module")
def large(tmp_path_factory):  # 160 px originals: pil-draft decodes them at 1/2 or 1/4
    return write_shards(tmp_path_factory.mktemp("large"), side=160)[0]


def test_torchvision_decode_gives_pils_pixels():
    rng = np.random.default_rng(1)
    rgb = make_image(rng, 72)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(rgb)).convert("L").save(buffer, format="JPEG", quality=85)
    for data in (rgb, buffer.getvalue()):
        ours = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        assert torch.equal(ours.permute(1, 2, 0), torch.from_numpy(np.asarray(load_rgb(data))))


def test_pil_draft_without_a_reduction_is_pil_bit_for_bit(small):
    for (a_images, a_tokens), (b_images, b_tokens) in zip(batches(small, "pil"), batches(small, "pil-draft"),
                                                          strict=True):
        assert torch.equal(a_images, b_images) and torch.equal(a_tokens, b_tokens)


@pytest.mark.parametrize("decoder, mean_tol, max_tol", [("torchvision", 0.5, 8), ("device", 0.5, 8),
                                                        ("pil-draft", 3.0, 40)])
@pytest.mark.parametrize("which", ["small", "large"])
def test_same_samples_and_crops_as_pil_pixels_within_tolerance(decoder, mean_tol, max_tol, which, request):
    spec = request.getfixturevalue(which)
    reference, ours = batches(spec, "pil"), batches(spec, decoder)
    other_crops = batches(spec, "pil", seed=1)
    for (a_images, a_tokens), (b_images, b_tokens), (c_images, _) in zip(reference, ours, other_crops,
                                                                        strict=True):
        assert torch.equal(a_tokens, b_tokens) and b_images.dtype == torch.uint8
        diff = (a_images.int() - b_images.int()).abs()
        assert diff.float().mean() < mean_tol and diff.max() <= max_tol, (diff.float().mean(), diff.max())
        # The tolerance tells crops apart: other crops (another seed) are far outside it.
        assert (a_images.int() - c_images.int()).abs().float().mean() > 4 * mean_tol


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_device_decoding_on_cpu_is_the_torchvision_decoder_bit_for_bit(large, workers):
    for (a_images, a_tokens), (b_images, b_tokens) in zip(batches(large, "torchvision", workers=workers),
                                                          batches(large, "device", workers=workers),
                                                          strict=True):
        assert torch.equal(a_images, b_images) and torch.equal(a_tokens, b_tokens)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_device_batch_drops_bad_bytes_and_reports_them(device):
    good_jpeg, png = make_image(np.random.default_rng(2), 48), io.BytesIO()
    Image.new("RGB", (40, 50), (9, 99, 199)).save(png, format="PNG")
    bad = good_jpeg[:200]
    outputs = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in (good_jpeg, bad, good_jpeg)]
    outputs.append(torch.from_numpy(np.asarray(load_rgb(png.getvalue()))).permute(2, 0, 1).contiguous())
    boxes = [(0, 0, 48, 48), (0, 0, 48, 48), (8, 8, 32, 32), (0, 0, 50, 40)]
    images, dropped = DeviceDecoder(16, device)(pack_device_batch(outputs, boxes))
    assert dropped == [1] and images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert images.device.type == device
    assert torch.all(images[2].cpu() == torch.tensor([9, 99, 199], dtype=torch.uint8).view(3, 1, 1))


class FakeStream:
    """A CUDA stream's bookkeeping on the CPU: which streams it was told to wait for."""

    def __init__(self, name: str) -> None:
        self.name, self.waited_for = name, []

    def wait_stream(self, other: FakeStream) -> None:
        self.waited_for.append(other.name)


def test_cuda_decode_runs_on_its_own_stream_and_the_training_stream_guards_its_outputs(monkeypatch):
    """The stream logic of the CUDA decode, with fakes: only a GPU can show the race itself (it is
    counted by `python -m benchmarks.performance.gpu_smoke`).
    torchvision's decode must run with the decoder's own
    stream current (so its outputs come from that stream's memory, never from blocks the training
    stream still reads), the training stream must wait for it, and every output must be recorded on
    the training stream before the crops read it."""
    from launch import decoders

    training, events, current = FakeStream("training"), [], ["training"]
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: FakeStream("decode"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: training)

    class StreamContext:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            current.append(self.stream.name)

        def __exit__(self, *exc):
            current.pop()

    monkeypatch.setattr(torch.cuda, "stream", StreamContext)

    def fake_decode(data, mode, device):
        events.append(("decode", current[-1], str(device)))
        if isinstance(data, list):
            raise RuntimeError("one of the batch is bad")  # the batched call fails as a whole: retried alone
        if data.numel() < 10:
            raise RuntimeError("bad JPEG")
        return torch.zeros(3, 4, 4, dtype=torch.uint8)

    monkeypatch.setattr(decoders, "decode_jpeg", fake_decode)
    recorded = []
    monkeypatch.setattr(torch.Tensor, "record_stream",
                        lambda self, stream: recorded.append((self.data_ptr(), stream.name)), raising=False)
    decoder = DeviceDecoder(16, "cuda")
    images = decoder._decode([torch.zeros(20, dtype=torch.uint8), torch.zeros(3, dtype=torch.uint8)])
    assert [image is None for image in images] == [False, True]
    assert events == [("decode", "decode", "cuda")] * 3  # the batch, then each alone: all on its stream
    assert training.waited_for == ["decode"]
    assert recorded == [(images[0].data_ptr(), "training")]  # the one output, on the training stream


@pytest.mark.gpu
def test_device_decoding_on_cuda_is_the_cpu_path_within_tolerance(large):
    """nvJPEG's IDCT and upsampling and the float resize on CUDA are not libjpeg-turbo's bits: the same
    samples and boxes, pixels close (pending a device: the tolerance is the CPU paths' own)."""
    for (a_images, a_tokens), (b_images, b_tokens) in zip(batches(large, "device"),
                                                          batches(large, "device", decode_device="cuda"),
                                                          strict=True):
        assert b_images.is_cuda and torch.equal(a_tokens, b_tokens)
        diff = (a_images.int() - b_images.cpu().int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 24, (diff.float().mean(), diff.max())


def test_device_path_skips_counts_keeps_batches_whole_and_resumes_exactly(tmp_path):
    spec, bad = write_shards(tmp_path / "bad", side=48, bad_every=5)
    captions_of = {}

    def loader(state=None):
        return get_train_loader(spec, image_size=SIZE, batch_size=8, workers=0, seed=0, shuffle_buffer=16,
                                decoder="device", finish_images=False, state=state)

    first = loader()
    it, run, states = iter(first), [], []
    for _ in range(8):
        run.append(next(it))
        states.append(first.state_dict())
    assert all(images.shape == (8, 3, SIZE, SIZE) and len(tokens) == 8 for images, tokens in run)
    assert first.skipped()["corrupt_image"] > 0
    pil = get_train_loader(spec, image_size=SIZE, batch_size=8, workers=0, seed=0, shuffle_buffer=16)
    pil_it = iter(pil)
    for _ in range(8):
        next(pil_it)
    assert pil.skipped()["corrupt_image"] > 0  # the same bytes are bad for the pil decoder too
    for text in bad | {f"sample {s} {i}" for s in range(3) for i in range(12)}:
        captions_of[tuple(towers.tokenize([text])[0].tolist())] = text
    seen = {captions_of[tuple(row.tolist())] for _, tokens in run for row in tokens}
    assert not seen & bad and len(seen) > 12
    assert any(len(state["device"]["images"]) for state in states)  # a batch was made whole from the next
    for k in (1, 3, 5):
        resumed = iter(loader(states[k - 1]))
        for images, tokens in run[k:k + 3]:
            again_images, again_tokens = next(resumed)
            assert torch.equal(images, again_images) and torch.equal(tokens, again_tokens)


def test_decoder_is_a_hashed_recipe_field_with_a_device_shorthand():
    hashes = {}
    for flags in ([], ["--decoder", "pil-draft"], ["--decoder", "torchvision"], ["--decode-on-device"]):
        experiment, _ = parse_experiment(flags)
        recipe = experiment.recipe.with_precision("cpu")[0]
        hashes[recipe.decoder] = recipe.sha256(1, {"toy_seed": 0})
    assert list(hashes) == list(DECODERS) and len(set(hashes.values())) == len(DECODERS)
    with pytest.raises(SystemExit) as exit_info:
        parse_experiment(["--decoder", "simd"])
    assert exit_info.value.code == 2


def test_decode_bench_runs_every_path_on_the_same_images(capsys):
    result = decode_bench.main(["--sides", "64", "--images", "3", "--repeats", "1", "--image-size", "32"])
    paths = result["sides"][0]["paths"]
    assert {"pil", "pil-draft", "torchvision", "device", "pillow", "pillow-draft"} <= set(paths)
    assert paths["pil"]["ratio_to_pil"] == 1.0
    for row in paths.values():
        assert row["samples_per_cpu_s"] > 0
        pil_rate = paths["pil"]["samples_per_cpu_s"]
        assert row["ratio_to_pil"] == pytest.approx(row["samples_per_cpu_s"] / pil_rate)
    assert "64 px originals" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        decode_bench.main(["--sides", "16", "--image-size", "32"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_train_py_with_decode_on_device_resumes_exactly_over_bad_jpegs(tmp_path):
    from launch import train

    spec, _ = write_shards(tmp_path / "shards", side=48, bad_every=5)
    argv = ["--tower", "mixer", "--steps", "3", "--warmup-steps", "1", "--batch-size", "8", "--image-size",
            str(SIZE), "--train-data", spec, "--decode-on-device", "--workers", "1", "--eval-samples", "8",
            "--log-every", "1", "--save-every", "1", "--runs-dir", str(tmp_path / "runs"), "--name", "dev",
            "--resume", "auto"]
    assert train.main(argv) == 0
    checkpoints = tmp_path / "runs" / "dev" / "checkpoints"
    last = checkpoints / "step_00000003.pt"
    uninterrupted = torch.load(last, weights_only=True)
    assert set(uninterrupted["data"][0]["device"]) == {"images", "tokens", "corrupt_image"}
    last.write_bytes(last.read_bytes()[:1000])  # torn: resume auto goes back to step 2
    assert train.main(argv) == 0
    resumed = torch.load(last, weights_only=True)
    assert all(torch.equal(uninterrupted["state_dict"][k], resumed["state_dict"][k])
               for k in uninterrupted["state_dict"])
