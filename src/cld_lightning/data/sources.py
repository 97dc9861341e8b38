"""Image sources: indexable collections of ``uint8 [C, H, W]`` tensors with integer labels.

A source only stores and decodes images; augmentation happens in :mod:`.datasets`. Small data sets
(CIFAR, Fashion-MNIST, Kitchen-HC) live in memory as one ``uint8 [N, C, H, W]`` tensor, which makes
per-sample access a cheap view and keeps worker start-up fast; large ones (STL-10 unlabeled,
ImageNet) are read lazily from a memory map or from image files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from .errors import CorruptImageError


@runtime_checkable
class ImageSource(Protocol):
    """What every source provides: ``len``, ``targets`` (long ``[N]``, -1 = unknown), images."""

    targets: torch.Tensor
    channels: int

    def __len__(self) -> int: ...

    def get_image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a ``uint8 [C, H, W]`` tensor."""
        ...


def _as_targets(targets: Sequence[int] | np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"got {t.numel()} labels for {n} images")
    return t


class TensorImages:
    """All images in memory as one ``uint8 [N, C, H, W]`` tensor."""

    def __init__(self, images: torch.Tensor | np.ndarray, targets: Sequence[int] | torch.Tensor):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"TensorImages expects uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        self.images = images.contiguous()
        self.targets = _as_targets(targets, len(images))
        self.channels = int(images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get_image(self, i: int) -> torch.Tensor:
        return self.images[i]


class MemmapImages:
    """Fixed-size uint8 records read lazily from a raw binary file (STL-10 layout).

    Each record is stored ``[C, W, H]`` column-major as in the STL-10 ``*_X.bin`` files; ``get_image``
    returns it as ``[C, H, W]``.
    """

    def __init__(
        self,
        path: str | Path,
        targets: Sequence[int] | torch.Tensor,
        shape: tuple[int, int, int],
        transpose_hw: bool = True,
    ) -> None:
        self.path = Path(path)
        self.shape = shape
        self.transpose_hw = transpose_hw
        record = int(np.prod(shape))
        size = self.path.stat().st_size
        if size % record:
            raise ValueError(
                f"{self.path}: size {size} bytes is not a multiple of one {shape} image ({record})"
            )
        self._n = size // record
        self.targets = _as_targets(targets, self._n)
        self.channels = shape[0]
        self._mm: np.memmap | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return self._n

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mm"] = None
        return state

    def get_image(self, i: int) -> torch.Tensor:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r").reshape(-1, *self.shape)
        img = np.array(self._mm[i])
        if self.transpose_hw:
            img = img.transpose(0, 2, 1)
        return torch.from_numpy(np.ascontiguousarray(img))


def decode_image(path: str | Path, channels: int = 3, size: int | None = None) -> torch.Tensor:
    """Decode an image file to ``uint8 [C, H, W]``; ``size`` resizes to ``size x size``.

    Raises :class:`CorruptImageError` naming the file when it cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for bad files
        raise CorruptImageError(path, e) from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def verify_image(path: str | Path) -> bool:
    """Cheap integrity check with PIL ``verify`` (header and, for PNG, chunk CRCs)."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not a usable image"
        return False


class FileImages:
    """Images decoded from files on each access (ImageFolder, file lists)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: Sequence[int] | torch.Tensor,
        channels: int = 3,
        size: int | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = _as_targets(targets, len(self.paths))
        self.channels = channels
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def get_image(self, i: int) -> torch.Tensor:
        return decode_image(self.paths[i], self.channels, self.size)

    def to_tensor_images(self) -> TensorImages:
        """Decode everything once into memory (all images must share one size)."""
        imgs = [self.get_image(i) for i in range(len(self))]
        shapes = {tuple(x.shape) for x in imgs}
        if len(shapes) > 1:
            raise ValueError(
                f"cannot cache images of different sizes {sorted(shapes)[:3]}; set an image size"
            )
        if not imgs:
            raise ValueError("no images to cache")
        return TensorImages(torch.stack(imgs), self.targets)


class SubsetImages:
    """A view of ``base`` restricted to ``indices`` (in the given order)."""

    def __init__(self, base: ImageSource, indices: Sequence[int] | torch.Tensor) -> None:
        self.base = base
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"subset indices out of range [0, {len(base)})")
        self.targets = base.targets[self.indices]
        self.channels = base.channels

    def __len__(self) -> int:
        return len(self.indices)

    def get_image(self, i: int) -> torch.Tensor:
        return self.base.get_image(int(self.indices[i]))


class ConcatImages:
    """Several sources one after the other (e.g. STL-10 train + unlabeled)."""

    def __init__(self, parts: Sequence[ImageSource]) -> None:
        if not parts:
            raise ValueError("ConcatImages needs at least one source")
        if len({p.channels for p in parts}) != 1:
            raise ValueError("cannot concatenate sources with different channel counts")
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.targets = torch.cat([p.targets for p in parts])
        self.channels = parts[0].channels

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get_image(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k].get_image(i - int(self.offsets[k]))
