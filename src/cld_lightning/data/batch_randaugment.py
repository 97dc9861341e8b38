"""InfoMin's RandAugment (:class:`~.randaugment.ReferenceRandAugment`) as batched ops.

Works on ``float [B, C, H, W]`` in [0, 1] on any device; every sample draws its own ops, apply
flags, magnitudes, signs and resampling modes from the caller's ``torch.Generator`` (same
distributions as the per-image reference). Internally the batch is held on the 0-255 scale and
every op ends with the rounding of torchvision's uint8 kernel (truncation for the blends and
AutoContrast, round-half-even for the affine ops and the sharpness kernel), so each op's values
match ``ReferenceRandAugment.apply`` on a uint8 image (equal but for 1-ulp float differences).
Per step, the affine ops (Rotate, ShearX/Y, TranslateX/YRel) of all samples share one sampling
grid (PIL's conventions, see :func:`~.randaugment.pil_affine`) and one ``grid_sample`` per
resampling mode; every other op runs once on the samples that drew it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from .randaugment import MAX_LEVEL, RAND_OPS, ReferenceRandAugment

AFFINE_OPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


@dataclass(frozen=True)
class RandAugmentDraws:
    """Per-sample draws, each ``[B, num_ops]``: op index into ``ops``, applied flag, level
    (float64, clipped to [0, 10]), negated sign, bicubic resampling."""

    op: Tensor
    apply: Tensor
    level: Tensor
    negate: Tensor
    bicubic: Tensor


def _floor_clamp(x: Tensor) -> Tensor:
    """torchvision's ``clamp_(0, 255).to(uint8)`` (truncation) on the 0-255 scale."""
    return x.clamp_(0.0, 255.0).floor_()


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """``[m]`` float64 values as float32 ``[m, 1, 1, 1]`` on ``x``'s device."""
    return v.to(torch.float32).to(x.device).view(-1, 1, 1, 1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """torchvision's uint8 ``_blend``: ``x·r + other·(1 - r)``, truncated."""
    r, rest = _per_sample(factor, x), _per_sample(1.0 - factor, x)
    return _floor_clamp(torch.addcmul(x * r, other, rest))


def _gray_floor(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)


def _color(x: Tensor, frac: Tensor) -> Tensor:
    return x if x.shape[1] == 1 else _blend(x, _gray_floor(x), 0.1 + 1.8 * frac)


def _contrast(x: Tensor, frac: Tensor) -> Tensor:
    gray = _gray_floor(x) if x.shape[1] == 3 else x
    return _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True), 0.1 + 1.8 * frac)


def _brightness(x: Tensor, frac: Tensor) -> Tensor:
    return _floor_clamp(x * _per_sample(0.1 + 1.8 * frac, x))


def _sharpness(x: Tensor, frac: Tensor) -> Tensor:
    """torchvision's ``adjust_sharpness``: blend with a rounded 3x3 smoothing inside the border."""
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], device=x.device)
    blurred = F.conv2d(x.reshape(1, n * c, h, w), kernel.expand(n * c, 1, 3, 3), groups=n * c)
    blurred = blurred.view(n, c, h - 2, w - 2).round_()
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.addcmul_(blurred - inner, _per_sample(1.0 - (0.1 + 1.8 * frac), x))
    return _floor_clamp(out)


def _posterize(x: Tensor, frac: Tensor) -> Tensor:
    step = _per_sample(2.0 ** (8.0 - torch.floor(frac * 4)), x)  # keep int(4·frac) high bits
    return torch.floor(x / step) * step


def _solarize(x: Tensor, frac: Tensor) -> Tensor:
    threshold = _per_sample(torch.floor(frac * 256), x)  # 256 (level 10): no pixel reaches it
    return torch.where(x >= threshold, 255.0 - x, x)


def _solarize_add(x: Tensor, frac: Tensor) -> Tensor:
    add = _per_sample(torch.floor(frac * 110), x)
    return torch.where(x < 128.0, (x + add).clamp_(max=255.0), x)


def _uint8_op(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """A batched torchvision uint8 kernel (per sample and channel) as a level-free op."""
    return lambda x, frac: fn(x.to(torch.uint8)).to(torch.float32)


POINT_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "AutoContrast": _uint8_op(TF.autocontrast),
    "Equalize": _uint8_op(TF.equalize),
    "Invert": lambda x, frac: 255.0 - x,
    "PosterizeTpu": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _color,
    "Contrast": _contrast,
    "Brightness": _brightness,
    "Sharpness": _sharpness,
}


def affine_matrices(
    kind: Tensor, frac: Tensor, negate: Tensor, height: int, width: int, translate_pct: float
) -> Tensor:
    """``[m, 6]`` float64 PIL affine matrices ``(a, b, c, d, e, f)`` of the reference's geometric
    ops: ``kind[i]`` indexes :data:`AFFINE_OPS`, at ``frac[i]`` = level / 10, sign flipped where
    ``negate`` (the same float64 arithmetic as :class:`~.randaugment.ReferenceRandAugment`)."""
    s = torch.where(negate, -frac.to(torch.float64), frac.to(torch.float64))
    angle = -(30.0 * s) * (math.pi / 180.0)  # randaugment.rotation_matrix, about the centre
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    rot = torch.stack(
        [cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, (-sin) * -cx + cos * -cy + cy], dim=1
    )
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    shear_x = torch.stack([one, 0.3 * s, zero, zero, one, zero], dim=1)
    shear_y = torch.stack([one, zero, zero, 0.3 * s, one, zero], dim=1)
    move_x = torch.stack([one, zero, translate_pct * s * width, zero, one, zero], dim=1)
    move_y = torch.stack([one, zero, zero, zero, one, translate_pct * s * height], dim=1)
    table = torch.stack([rot, shear_x, shear_y, move_x, move_y], dim=1)  # [m, 5, 6]
    return table[torch.arange(len(s)), kind.long()]


def batch_pil_affine(x: Tensor, matrices: Tensor, fill: Sequence[float], bicubic: Tensor) -> Tensor:
    """:func:`~.randaugment.pil_affine` per sample on the 0-255 scale: output pixel centre
    ``(x, y)`` samples ``(a·x + b·y + c, d·x + e·y + f)``; outside points get ``fill``; rounded."""
    n, c, h, w = x.shape
    dev = x.device
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=dev) + 0.5,
        torch.arange(w, dtype=torch.float32, device=dev) + 0.5,
        indexing="ij",
    )
    a, b, cc, d, e, f = matrices.to(torch.float32).to(dev).view(n, 6, 1, 1).unbind(1)
    xin = a * xs + b * ys + cc
    yin = d * xs + e * ys + f
    grid = torch.stack((2.0 * xin / w - 1.0, 2.0 * yin / h - 1.0), dim=-1)
    out = torch.empty_like(x)
    cubic = bicubic.cpu()  # row indices on the host: no device sync
    for mode, rows in (("bicubic", cubic), ("bilinear", ~cubic)):
        idx = torch.nonzero(rows).flatten().to(dev)
        if idx.numel():
            out[idx] = F.grid_sample(
                x[idx], grid[idx], mode=mode, padding_mode="border", align_corners=False
            )
    inside = ((xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)).unsqueeze(1)
    fill_t = torch.tensor(list(fill), dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    return torch.where(inside, out, fill_t).round_().clamp_(0.0, 255.0)


class BatchRandAugment(ReferenceRandAugment):
    """Batched ``rand-n{num_ops}-m{magnitude}-mstd{magnitude_std}`` on ``float [B, C, H, W]`` in
    [0, 1]: the arguments, checks and single-image ops of
    :class:`~.randaugment.ReferenceRandAugment`, with every sample's draws taken from a generator
    and each op applied once per step to the samples that drew it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # op index -> index into AFFINE_OPS, -1 for the pointwise ops
        self._affine_kind = torch.tensor(
            [AFFINE_OPS.index(o) if o in AFFINE_OPS else -1 for o in self.ops]
        )

    def sample(self, n: int, gen: torch.Generator) -> RandAugmentDraws:
        """Every sample's draws (all drawn, used or not, so the count is fixed per batch)."""
        shape = (n, self.num_ops)
        op = torch.randint(len(self.ops), shape, generator=gen)
        apply = torch.rand(shape, generator=gen) <= self.prob  # the reference skips on u > prob
        level = torch.full(shape, self.magnitude, dtype=torch.float64)
        if self.magnitude_std > 0:
            level = torch.normal(self.magnitude, self.magnitude_std, shape, generator=gen)
        bicubic = torch.rand(shape, generator=gen) < 0.5
        negate = torch.rand(shape, generator=gen) > 0.5
        level = level.to(torch.float64).clamp_(0.0, MAX_LEVEL)
        return RandAugmentDraws(op, apply, level, negate, bicubic)

    def apply_op(
        self, name: str, x: Tensor, level: Tensor, negate: Tensor, bicubic: Tensor
    ) -> Tensor:
        """Op ``name`` on a batch on the 0-255 scale (integer values), per-sample ``level`` /
        ``negate`` / ``bicubic`` (``[m]``); returns integer values on the 0-255 scale."""
        frac = level.to(torch.float64) / MAX_LEVEL
        if name in POINT_OPS:
            return POINT_OPS[name](x, frac)
        if name not in AFFINE_OPS:
            raise ValueError(f"unknown RandAugment op {name!r}; valid: {RAND_OPS}")
        h, w = x.shape[-2:]
        kind = torch.full((len(x),), AFFINE_OPS.index(name))
        mats = affine_matrices(kind, frac, negate, h, w, self.translate_pct)
        return batch_pil_affine(x, mats, self.fill_for(x.shape[1]), bicubic)

    def _step(self, x: Tensor, draws: RandAugmentDraws, k: int) -> Tensor:
        """The ``k``-th drawn op of every sample (one op per sample, so groups are disjoint)."""
        op, on = draws.op[:, k], draws.apply[:, k]
        kind = self._affine_kind[op]
        rows = torch.nonzero((kind >= 0) & on).flatten()
        if rows.numel():
            h, w = x.shape[-2:]
            kind = kind[rows]
            frac = draws.level[rows, k] / MAX_LEVEL
            mats = affine_matrices(kind, frac, draws.negate[rows, k], h, w, self.translate_pct)
            sel = rows.to(x.device)
            y = batch_pil_affine(x[sel], mats, self.fill_for(x.shape[1]), draws.bicubic[rows, k])
            x.index_copy_(0, sel, y)
        for i, name in enumerate(self.ops):
            rows = torch.nonzero((op == i) & on).flatten()
            if name in AFFINE_OPS or rows.numel() == 0:
                continue
            sel = rows.to(x.device)
            frac = draws.level[rows, k] / MAX_LEVEL
            x.index_copy_(0, sel, POINT_OPS[name](x[sel], frac))
        return x

    def __call__(  # type: ignore[override]  (a batch and a generator, not one image)
        self, x: Tensor, gen: torch.Generator, draws: RandAugmentDraws | None = None
    ) -> Tensor:
        """RandAugment of every image of ``x`` (float in [0, 1], rounded to uint8 levels first);
        ``draws`` (default: :meth:`sample` from ``gen``) fixes the per-sample choices."""
        if draws is None:
            draws = self.sample(x.shape[0], gen)
        y = (x * 255.0).round_().clamp_(0.0, 255.0)
        for k in range(self.num_ops):
            y = self._step(y, draws, k)
        return y.div_(255.0)
