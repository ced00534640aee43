"""Decoders of the training image transform: where and how a JPEG becomes a random-resized crop.

The recipe's `decoder` field names one (it changes pixels, so it is in recipe_sha256):

    pil          today's path and the default: PIL decodes the whole image, then open_clip's train
                 transform (RandomResizedCrop, bicubic, antialiased) runs on the PIL image
    pil-draft    PIL's reduced-size JPEG decoding (`Image.draft`: libjpeg's 1/2, 1/4, 1/8 scaled IDCT)
                 whenever the crop, so reduced, still covers the output size; then the same PIL resize.
                 Bit-identical to `pil` when no reduction applies (e.g. 256 px originals, 224 px crops)
    torchvision  torchvision.io.decode_jpeg on the CPU (the same libjpeg-turbo pixels as PIL, tested),
                 then the crop and resize on the uint8 tensor (torch's antialiased bicubic)
    device       the `torchvision` math, moved: workers ship the encoded bytes (and the crop boxes);
                 the training process decodes a batch at once on its device (nvJPEG on CUDA, the
                 CPU decoder on CPU) and crops and resizes there (`DeviceDecoder`)

Every decoder draws the crop boxes exactly as `pil` does: RandomResizedCrop.get_params on the original
size, in batch order, from the same seeded RNG (the box is drawn from the header's size before the
decode; a sample whose decode then fails gives its draw back). Non-JPEG images, and JPEGs in modes
other than RGB and L (CMYK...), are decoded by PIL (`load_rgb`) in every decoder; only the crop and
resize then follow the decoder. Measurements: docs/gpu_path.md ("JPEG decode ceiling").
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, PILToTensor, RandomResizedCrop

from benchmarks.data.shards import load_rgb

DECODERS = ("pil", "pil-draft", "torchvision", "device")
DEFAULT_DECODER = "pil"
DEVICE_DECODED_MODES = ("RGB", "L")  # JPEG modes that torchvision's decode_jpeg turns into RGB as PIL does
_TO_TENSOR = PILToTensor()


def random_resized_crop(transform: Callable) -> RandomResizedCrop:
    """The transform's RandomResizedCrop (open_clip's train transform starts with it)."""
    crop = next((step for step in getattr(transform, "transforms", [transform])
                 if isinstance(step, RandomResizedCrop)), None)
    if crop is None:
        raise ValueError(f"decoders: no RandomResizedCrop in the train transform {transform}")
    return crop


def draw_box(crop: RandomResizedCrop, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) as `crop` draws it for an image of that size, from the global RNG
    (get_params reads only the size: a zero-storage tensor of that shape stands in for the image)."""
    shape_only = torch.empty(()).expand(3, height, width)
    return tuple(int(v) for v in RandomResizedCrop.get_params(shape_only, crop.scale, crop.ratio))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread, as in a DataLoader worker (see benchmarks.data.shards.transform_images)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.open(io.BytesIO(data))  # lazy: reads the header only


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def crop_tensor(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): the box, resized with antialiased bicubic."""
    return TF.resized_crop(image, *box, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)


class WorkerDecoder:
    """In a loader worker: image bytes -> (uint8 output, box), or None when the bytes do not decode.

    Output: `pil-draft`, `torchvision`: the (3, size, size) crop; `device`: the encoded bytes as a 1-D
    uint8 tensor (a JPEG the device decodes) or the whole decoded (3, H, W) image (anything else)."""

    def __init__(self, kind: str, transform: Callable) -> None:
        if kind not in DECODERS or kind == "pil":
            raise ValueError(f"WorkerDecoder: decoder {kind!r} is not one of {DECODERS[1:]}")
        self.kind, self.crop = kind, random_resized_crop(transform)
        self.size = self.crop.size[0]
        if self.crop.interpolation != InterpolationMode.BICUBIC or not self.crop.antialias:
            raise ValueError("decoders: expected open_clip's bicubic, antialiased RandomResizedCrop")

    def __call__(self, data: bytes) -> tuple[torch.Tensor, tuple[int, int, int, int]] | None:
        state = torch.get_rng_state()
        try:
            image = _open(data)
            width, height = image.size
            box = draw_box(self.crop, height, width)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self._decode(image, data, box), box
        except Exception:  # corrupt bytes raise many types (OSError, RuntimeError, SyntaxError, ...)
            torch.set_rng_state(state)  # a skipped sample draws nothing, as in the pil decoder
            return None

    def _decode(self, image: Image.Image, data: bytes, box: tuple[int, int, int, int]) -> torch.Tensor:
        jpeg = image.format == "JPEG" and image.mode in DEVICE_DECODED_MODES
        if self.kind == "pil-draft":
            return self._draft(image, data, box) if jpeg else self._pil_crop(load_rgb(data), box)
        if not jpeg:
            decoded = _TO_TENSOR(load_rgb(data))
            return decoded if self.kind == "device" else crop_tensor(decoded, box, self.size)
        if self.kind == "device":
            return _bytes_tensor(data)
        return crop_tensor(decode_jpeg(_bytes_tensor(data), mode=ImageReadMode.RGB), box, self.size)

    def _pil_crop(self, image: Image.Image, box: tuple[int, int, int, int]) -> torch.Tensor:
        top, left, h, w = box  # torchvision's resized_crop on a PIL image: crop, then resize
        cropped = image.crop((left, top, left + w, top + h))
        return _TO_TENSOR(cropped.resize((self.size, self.size), Image.BICUBIC))

    def _draft(self, image: Image.Image, data: bytes, box: tuple[int, int, int, int]) -> torch.Tensor:
        top, left, h, w = box
        width, height = image.size
        # The scale at which the box still covers the output: libjpeg picks the largest 1/2^k reduction
        # whose image is at least this big, so every reduced box is >= size x size.
        wanted = (-(-width * self.size // w), -(-height * self.size // h))
        image.draft("RGB", wanted)
        if image.size == (width, height):
            return self._pil_crop(load_rgb(data) if image.mode != "RGB" else _loaded(image), box)
        sx, sy = image.size[0] / width, image.size[1] / height
        reduced = _loaded(image).convert("RGB")
        resized = reduced.resize((self.size, self.size), Image.BICUBIC,
                                 box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy))
        return _TO_TENSOR(resized)


def _loaded(image: Image.Image) -> Image.Image:
    image.load()  # truncation raises, as in load_rgb
    return image


class DeviceDecoder:
    """In the training process: a worker's `device` batch -> uint8 (n, 3, size, size) on `device`,
    and the indices of the samples whose bytes did not decode (dropped; the caller counts them).

    JPEGs are decoded in one batched call (nvJPEG on CUDA); when that call fails, each is decoded
    alone to find the bad ones. The crops are cut and resized on the device.

    On CUDA the decode runs with a stream of its own current (`decode_stream`). torchvision's CUDA
    decode_jpeg (0.29) allocates its outputs on the caller's current stream and has nvJPEG write them
    from a private stream that never waits for the caller's (pytorch/vision#9606): called on the
    training stream, with the host running steps ahead, it is handed blocks that queued training
    kernels still read, and overwrites them. From the decode stream's pool it gets only blocks of
    earlier decodes; each output is `record_stream`ed on the training stream, so the allocator hands
    it out again only once the crops that read it have run, and the training stream waits for the
    decode stream (an event, no host wait) before cropping."""

    def __init__(self, size: int, device: torch.device | str) -> None:
        self.size, self.device = size, torch.device(device)
        self.decode_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _decode(self, encoded: list[torch.Tensor]) -> list[torch.Tensor | None]:
        if not encoded:
            return []
        if self.decode_stream is None:
            return decode_batch(encoded, "cpu")
        consumer = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.decode_stream):
            images = decode_batch(encoded, self.device)
        consumer.wait_stream(self.decode_stream)
        for image in images:
            if image is not None:
                image.record_stream(consumer)
        return images

    def __call__(self, batch: dict) -> tuple[torch.Tensor, list[int]]:
        offsets, boxes = batch["offsets"].tolist(), batch["boxes"].tolist()
        decoded: dict[int, torch.Tensor] = batch["decoded"]
        jpegs = [i for i in range(len(boxes)) if i not in decoded]
        spans = [batch["encoded"][offsets[i]:offsets[i + 1]] for i in jpegs]
        images = dict(zip(jpegs, self._decode(spans), strict=True))
        images.update(decoded)
        bad = [i for i in range(len(boxes)) if images[i] is None]
        crops = [crop_tensor(images[i].to(self.device, non_blocking=True), tuple(boxes[i]), self.size)
                 for i in range(len(boxes)) if images[i] is not None]
        empty = torch.empty((0, 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        return (torch.stack(crops) if crops else empty), bad


def decode_batch(encoded: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor | None]:
    """torchvision's decode_jpeg of a list of JPEG byte tensors on `device`, None for each that does not
    decode (the batched call fails as a whole, so a failure retries each alone). On CUDA this is the
    bare call, with the stream hazard `DeviceDecoder` guards against."""
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for data in encoded:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def pack_device_batch(outputs: list[torch.Tensor], boxes: list[tuple[int, int, int, int]]) -> dict:
    """A worker's `device` outputs as one byte tensor + offsets (one shared-memory block per batch
    between processes, not one per image), the few PIL-decoded images aside, and the boxes."""
    encoded = [o for o in outputs if o.ndim == 1]
    sizes = [o.numel() if o.ndim == 1 else 0 for o in outputs]
    offsets = torch.tensor([0] + sizes).cumsum(0)
    return {"encoded": torch.cat(encoded) if encoded else torch.empty(0, dtype=torch.uint8),
            "offsets": offsets, "decoded": {i: o for i, o in enumerate(outputs) if o.ndim == 3},
            "boxes": torch.tensor(boxes, dtype=torch.long).view(-1, 4)}
