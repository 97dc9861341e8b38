"""Decoding JPEG training images on the model's device (``data.decoder=torchvision|dali``).

``data.decoder=pil`` (default): the loader workers decode with PIL (unchanged CPU path).

``data.decoder=torchvision``: the training loader yields the *encoded* files (uint8 1-D tensors,
collated as an :class:`EncodedBatch`, which Lightning leaves on the host because nvJPEG reads host
memory); ``on_after_batch_transfer`` decodes the batch with
``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG batched on CUDA; one image at a time on the
CPU), takes every view's RandomResizedCrop from the *full* decoded image (boxes drawn per image from
its own size, exactly as torchvision's sampler; crop + bilinear resize to ``image_size`` with
``roi_align``, one call per distinct image size), and then runs the remaining ops of the batched
recipe (:mod:`.batch_augment`: flip, jitter, grayscale, blur, solarize, normalise, erasing). The
fixed-size resize is the crop's own resize, so no image is squashed to a square first. Needs
``data.augment_on=device`` (the model's device: a CPU-only run decodes on the CPU, useful for tests
and for freeing loader workers) or ``gpu`` (CUDA required). InfoMin (``data.augmentation=infomin``,
``infomin_jigsaw``) runs here too, the jigsaw view cropped at its own scale and size; only
``infomin_jigsaw`` with ``data.decoder=dali`` is rejected (:func:`check_pre_cropped`).

``data.decoder=dali``: see :mod:`.dali`; DALI reads, decodes and crops on the GPU and the same torch
ops finish the views.

Only the pretraining loader changes; the kNN memory/test loaders keep the PIL eval transform.
Non-JPEG files (ImageNet has one PNG saved as ``.JPEG``) and CMYK JPEGs (a few in ImageNet) are
re-encoded to RGB JPEG (quality 95) in the worker, with a warning; a file that fails to decode is
named in the error.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .batch_augment import BatchMultiViewAugment, final_recipe, sample_crop_boxes_sized
from .errors import CorruptImageError
from .sources import FileImages, ImageSource, SubsetImages

log = logging.getLogger(__name__)

DECODERS = ("pil", "torchvision", "dali")
JPEG_MAGIC = b"\xff\xd8\xff"


def check_decoder(decoder: str, augment_on: str) -> None:
    """Validate ``data.decoder`` against ``data.augment_on`` and what this machine has."""
    if decoder not in DECODERS:
        raise ValueError(f"data.decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder == "pil":
        return
    if augment_on == "loader":
        raise ValueError(
            f"data.decoder={decoder} decodes on the model's device, so the views are made there "
            "too: set data.augment_on=device (or gpu); data.augment_on=loader contradicts it "
            "(or use data.decoder=pil)"
        )
    if decoder == "dali":
        from .dali import require_dali

        require_dali()
    elif decoder == "torchvision":
        try:
            from torchvision.io import decode_jpeg  # noqa: F401
        except ImportError as e:  # pragma: no cover - torchvision is a dependency
            raise ValueError(
                f"data.decoder=torchvision needs torchvision.io.decode_jpeg: {e}"
            ) from e


def file_paths(source: ImageSource, dataset: str = "") -> list[str]:
    """The image file of every instance of ``source`` (image files, possibly subset)."""
    if isinstance(source, FileImages):
        return list(source.paths)
    if isinstance(source, SubsetImages):
        base = file_paths(source.base, dataset)
        return [base[i] for i in source.indices.tolist()]
    raise ValueError(
        f"data.decoder=torchvision|dali reads encoded image files (dataset=imagefolder, "
        f"imagenet100, filelist with data.cache_images=false and data.copies=1), but "
        f"{dataset or 'this data set'} gives {type(source).__name__} (decoded images); use "
        "data.decoder=pil"
    )


class EncodedBatch:
    """A list of encoded images (uint8 1-D CPU tensors) and their files. Not a collection Lightning
    moves to the device: nvJPEG decodes from host memory. ``pin_memory`` pins every buffer."""

    def __init__(self, data: list[Tensor], paths: list[str]) -> None:
        self.data = data
        self.paths = paths

    def __len__(self) -> int:
        return len(self.data)

    def pin_memory(self) -> EncodedBatch:
        return EncodedBatch([d.pin_memory() for d in self.data], self.paths)


def _reencode_jpeg(raw: bytes, path: str, channels: int) -> bytes:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            out = io.BytesIO()
            im.save(out, format="JPEG", quality=95)
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(path, e) from e
    log.warning(
        "%s is not a 1- or 3-channel JPEG file: re-encoded to JPEG (quality 95) for data.decoder",
        path,
    )
    return out.getvalue()


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_components(raw: bytes) -> int | None:
    """Colour components of a JPEG (its first SOF header), or None when not found. 4 = CMYK/YCCK
    (ImageNet has a few), which nvJPEG may not turn into RGB: such files are re-encoded."""
    i = 2
    while i + 4 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            return raw[i + 9] if i + 9 < len(raw) else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any SOF
            return None
        i += 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
    return None


class EncodedDataset(Dataset):
    """Yields ``(encoded bytes uint8 [n], target, index)`` for each instance of a file source."""

    draws_random = False  # no transform: SeededDataset skips seeding

    def __init__(self, source: ImageSource, dataset: str = "") -> None:
        self.paths = file_paths(source, dataset)
        self.targets = source.targets
        self.channels = source.channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, str, int, int]:
        path = self.paths[index]
        with open(path, "rb") as f:
            raw = f.read()
        if not raw.startswith(JPEG_MAGIC) or jpeg_components(raw) not in (1, 3):
            raw = _reencode_jpeg(raw, path, self.channels)
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        return data, path, int(self.targets[index]), int(index)


def collate_encoded(items: Sequence[tuple[Tensor, str, int, int]]):
    """``(EncodedBatch, targets [B], indices [B])``: the byte strings differ in length."""
    data, paths, targets, index = zip(*items, strict=True)
    return (
        EncodedBatch(list(data), list(paths)),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(index, dtype=torch.long),
    )


def collate_image_list(items: Sequence[tuple[Tensor, int, int]]):
    """``([uint8 [C, H_i, W_i]], targets [B], indices [B])``: decoded images of different sizes
    (``augment_on=device`` on an uncached ImageFolder / file list); Lightning moves the list."""
    images, targets, index = zip(*items, strict=True)
    return (
        list(images),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(index, dtype=torch.long),
    )


def decode_jpegs(
    batch: EncodedBatch, device: torch.device | str, channels: int = 3
) -> list[Tensor]:
    """Decode every image to ``uint8 [C, H, W]`` on ``device`` (nvJPEG batched on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    device = torch.device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29: "use TorchCodec"
        try:
            return list(decode_jpeg(batch.data, mode=mode, device=device))
        except RuntimeError as e:
            for data, path in zip(batch.data, batch.paths, strict=True):  # name the bad file
                try:
                    decode_jpeg(data, mode=mode)
                except RuntimeError as one:
                    raise CorruptImageError(path, one) from e
            raise


def crop_views(images: Sequence[Tensor], boxes: Tensor, size: int) -> Tensor:
    """Crop ``boxes [V, B, 4]`` (top, left, h, w) of each image of its own size and resize to
    ``size`` (bilinear, 2x2 samples a pixel as :func:`~.batch_augment.resized_crop`):
    ``float [V, B, C, size, size]`` in [0, 1]. One ``roi_align`` per distinct image size."""
    from torchvision.ops import roi_align

    num_views, n = boxes.shape[:2]
    dev = images[0].device
    out = torch.empty(num_views, n, images[0].shape[0], size, size, device=dev)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        groups[tuple(im.shape)].append(i)
    for idx in groups.values():
        x = torch.stack([images[i] for i in idx]).float().div_(255.0)
        top, left, h, w = boxes[:, idx].reshape(-1, 4).to(dev, torch.float32).unbind(1)
        which = torch.arange(len(idx), device=dev, dtype=torch.float32).repeat(num_views)
        rois = torch.stack([which, left, top, left + w, top + h], dim=1)
        y = roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        out[:, idx] = y.view(num_views, len(idx), *y.shape[1:])
    return out.clamp_(0.0, 1.0)


def check_pre_cropped(augmentation: str) -> None:
    """Views pre-cropped at one size (DALI's output) cannot hold ``infomin_jigsaw``'s jigsaw view,
    which has its own crop scale and size: a ``ValueError`` naming both keys."""
    if final_recipe(augmentation) is not None:
        raise ValueError(
            f"data.augmentation={augmentation!r} needs a jigsaw view cropped at its own scale "
            "and size, which DALI's pre-cropped views (data.decoder=dali) do not have; use "
            "data.decoder=torchvision|pil or data.augmentation=infomin"
        )


class DecodedMultiViewAugment(BatchMultiViewAugment):
    """The batched recipes of :class:`~.batch_augment.BatchMultiViewAugment` on a list of decoded
    images of different sizes: each view's crop is taken from the full image, then the same
    per-sample ops (same distributions) run on the ``[B, C, size, size]`` crops (InfoMin's jigsaw
    view: its own crop scale and size)."""

    def from_crops(self, crops: Sequence[Tensor], gen: torch.Generator) -> list[Tensor]:
        """Views from already cropped ``float [B, C, size, size]`` batches in [0, 1], one per view
        (DALI's output)."""
        check_pre_cropped(self.augmentation)
        return [self.finish(c, self.recipe(v), gen) for v, c in enumerate(crops)]

    def __call__(self, images: Sequence[Tensor], gen: torch.Generator) -> list[Tensor]:  # type: ignore[override]
        if isinstance(images, Tensor):  # a same-size uint8 batch: the parent's path
            return super().__call__(images, gen)
        heights = torch.tensor([im.shape[-2] for im in images])
        widths = torch.tensor([im.shape[-1] for im in images])
        recipes = [self.recipe(v) for v in range(self.num_views)]
        boxes = [
            sample_crop_boxes_sized(heights, widths, self.crop_scale(r), self.ratio, gen)
            for r in recipes
        ]
        sizes = [self.view_size(r) for r in recipes]
        crops: list[Tensor] = [torch.empty(0)] * self.num_views
        for size in dict.fromkeys(sizes):  # one crop_views per view size, in view order
            views = [v for v, s in enumerate(sizes) if s == size]
            out = crop_views(images, torch.stack([boxes[v] for v in views]), size)
            for v, crop in zip(views, out.unbind(0), strict=True):
                crops[v] = crop
        return [self.finish(crops[v], r, gen) for v, r in enumerate(recipes)]


def write_jpeg_imagefolder(
    root: str,
    classes: int = 3,
    per_class: int = 4,
    sizes: Sequence[tuple[int, int]] = ((32, 32), (40, 30), (28, 44)),
    splits: Sequence[str] = ("train", "val"),
    seed: int = 0,
    quality: int = 90,
) -> str:
    """Write ``ROOT/<split>/class<k>/<i>.jpg`` of smooth synthetic images whose ``(H, W)`` cycle
    through ``sizes`` (tests of ``data.decoder``, ``scripts/gpu_throughput.py``)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from .synthetic import fake_images

    base = Path(root)
    side = max(max(s) for s in sizes)
    for k, split in enumerate(splits):
        labels = np.repeat(np.arange(classes), per_class)
        x, y = fake_images(len(labels), classes, side, 3, seed + k, labels=labels)
        for i, (img, c) in enumerate(zip(x, y, strict=True)):
            h, w = sizes[i % len(sizes)]
            d = base / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(img).resize((w, h), Image.BILINEAR)
            im.save(d / f"{i:05d}.jpg", format="JPEG", quality=quality)
    return str(base)
