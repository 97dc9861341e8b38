"""Highly correlated data: each of M source images becomes R near-duplicate instances.

Instance ``i`` comes from source ``i // copies``. Its perturbation (a crop of 70-100% of the area
resized back, a shift of up to ``size/16`` pixels with edge padding, a per-channel gain in
[0.9, 1.1] and a brightness offset in [-10, 10] grey levels) is drawn once from ``seed`` when the
set is built and then applied identically every time the instance is read, so the instances are
fixed across epochs (and across worker processes) without storing M x R images.
Every instance keeps its own index and its source's label.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .sources import ImageSource

CROP_SCALE = (0.7, 1.0)
GAIN = (0.9, 1.1)
OFFSET = 10.0


def check_correlated_args(copies: int, num_sources: int | None, available: int | None = None):
    """Validate ``data.copies`` (>= 1) and ``data.num_sources`` (1 .. available or null)."""
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
        raise ValueError(f"data.copies must be an integer >= 1, got {copies!r}")
    if num_sources is not None:
        if not isinstance(num_sources, int) or isinstance(num_sources, bool) or num_sources < 1:
            raise ValueError(
                f"data.num_sources must be an integer >= 1 or null, got {num_sources!r}"
            )
        if available is not None and num_sources > available:
            raise ValueError(
                f"data.num_sources={num_sources} exceeds the {available} images available"
            )


class CorrelatedImages:
    """``num_sources`` images of ``base`` (all by default), each repeated as ``copies`` instances."""

    def __init__(
        self, base: ImageSource, copies: int, num_sources: int | None = None, seed: int = 0
    ) -> None:
        check_correlated_args(copies, num_sources, len(base))
        self.base = base
        self.copies = copies
        self.channels = base.channels
        rng = np.random.default_rng(seed)
        m = len(base) if num_sources is None else num_sources
        if num_sources is None:
            src = np.arange(m)
        else:
            src = np.sort(rng.choice(len(base), size=m, replace=False))
        self.source_indices = torch.from_numpy(src).long()
        # instance i -> position i // copies in source_indices
        self.source_of = torch.arange(m * copies) // copies
        self.targets = base.targets[self.source_indices][self.source_of]
        n = m * copies
        side = np.sqrt(rng.uniform(*CROP_SCALE, size=n))
        self.crop = torch.from_numpy(
            np.stack([rng.uniform(0, 1 - side), rng.uniform(0, 1 - side), side], 1)
        ).float()  # top, left (fractions of H, W), side fraction
        self.shift = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(n, 2))).float()
        self.gain = torch.from_numpy(rng.uniform(*GAIN, size=(n, self.channels))).float()
        self.offset = torch.from_numpy(rng.uniform(-OFFSET, OFFSET, size=n)).float()

    def __len__(self) -> int:
        return len(self.source_of)

    def source_index(self, i: int) -> int:
        """Index in ``base`` of instance ``i``'s source image."""
        return int(self.source_indices[self.source_of[i]])

    def get_image(self, i: int) -> torch.Tensor:
        img = self.base.get_image(self.source_index(i))
        _, h, w = img.shape
        top, left, side = self.crop[i].tolist()
        ch, cw = max(1, round(side * h)), max(1, round(side * w))
        out = TF.resized_crop(
            img, round(top * h), round(left * w), ch, cw, [h, w], antialias=True
        ).float()
        max_shift = max(1, round(min(h, w) / 16))
        dy, dx = (self.shift[i] * max_shift).round().long().tolist()
        if dx or dy:
            pad = max_shift
            out = F.pad(out[None], (pad, pad, pad, pad), mode="replicate")[0]
            out = out[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w]
        out = out * self.gain[i].view(-1, 1, 1) + self.offset[i]
        return out.round_().clamp_(0, 255).to(torch.uint8)
