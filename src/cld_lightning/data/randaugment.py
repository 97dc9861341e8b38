"""InfoMin's RandAugment as the reference runs it (``rand-n2-m10-mstd0.5``), on uint8 tensors.

The reference (``datasets/RandAugment.py`` of the CLD code, Ross Wightman's timm version) differs
from ``torchvision``'s ``RandAugment(num_ops=2, magnitude=10)`` in strength: torchvision maps
``magnitude`` on a 31-bin scale (10 ≈ a third: rotate 10°, shear 0.1, translate 0.15·side),
the reference maps ``m`` on a 10-level scale, so ``m = 10`` is full strength:

* ``num_ops`` ops drawn uniformly **with replacement** from 15 (AutoContrast, Equalize, Invert,
  Rotate, PosterizeTpu, Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX,
  ShearY, TranslateXRel, TranslateYRel);
* each drawn op is applied with probability ``prob`` (0.5), at a magnitude drawn per op from
  ``N(m, magnitude_std)`` clipped to ``[0, 10]``;
* level -> argument: rotate ``±30°·m/10``, shear ``±0.3·m/10``, translate ``±0.45·m/10`` of the
  side, enhance factor ``0.1 + 1.8·m/10``, posterize ``int(4·m/10)`` bits, solarize threshold
  ``int(256·m/10)``, solarize-add ``int(110·m/10)`` below 128;
* geometric ops use PIL's affine conventions (shear about the top-left corner, rotation about the
  centre), a random choice of bilinear/bicubic resampling, and fill the uncovered area with the
  data set's mean colour (the reference: the ImageNet mean, (124, 116, 104)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

MAX_LEVEL = 10.0
RAND_OPS: tuple[str, ...] = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeTpu",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)


def _signed(value: float) -> float:
    """The reference's ``_randomly_negate``: ``-v`` with probability 0.5."""
    return -value if float(torch.rand(())) > 0.5 else value


def pil_affine(
    img: Tensor, matrix: Sequence[float], fill: Sequence[float], bicubic: bool
) -> Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f))`` on a ``[C, H, W]`` tensor:
    output pixel centre ``(x, y)`` samples the input at ``(a·x + b·y + c, d·x + e·y + f)``
    (continuous coordinates, pixel ``i`` covers ``[i, i+1)``); points outside get ``fill``."""
    c, h, w = img.shape
    a, b, cc, d, e, f = (float(v) for v in matrix)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + 0.5,
        torch.arange(w, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    xin = a * xs + b * ys + cc
    yin = d * xs + e * ys + f
    grid = torch.stack((2.0 * xin / w - 1.0, 2.0 * yin / h - 1.0), dim=-1).unsqueeze(0)
    x = img.float().unsqueeze(0)
    out = F.grid_sample(
        x,
        grid,
        mode="bicubic" if bicubic else "bilinear",
        padding_mode="border",
        align_corners=False,
    )[0]
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    fill_t = torch.tensor(list(fill), dtype=torch.float32).view(-1, 1, 1).expand(c, h, w)
    out = torch.where(inside.unsqueeze(0), out, fill_t)
    if img.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(img.dtype)


def rotation_matrix(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """The inverse affine matrix of PIL's ``Image.rotate(degrees)`` (counter-clockwise, about
    the centre), as the reference writes it for old PIL versions."""
    angle = -math.radians(degrees)
    m = [math.cos(angle), math.sin(angle), 0.0, -math.sin(angle), math.cos(angle), 0.0]
    cx, cy = width / 2.0, height / 2.0
    m[2] = m[0] * -cx + m[1] * -cy + cx
    m[5] = m[3] * -cx + m[4] * -cy + cy
    return tuple(m)


class ReferenceRandAugment:
    """``rand-n{num_ops}-m{magnitude}-mstd{magnitude_std}`` of the reference, on uint8 ``[C, H, W]``.

    Args:
        num_ops: ops drawn per image (with replacement).
        magnitude: ``m`` on the 0-10 scale (10 = full strength).
        magnitude_std: per-op Gaussian noise on ``m`` (clipped to [0, 10]); 0 = fixed.
        prob: probability that a drawn op is applied.
        ops: the op names (default: the reference's 15, :data:`RAND_OPS`).
        fill: colour of uncovered pixels (0-255 per channel).
        translate_pct: translation at ``m = 10`` as a fraction of the side.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 10.0,
        magnitude_std: float = 0.5,
        prob: float = 0.5,
        ops: Sequence[str] = RAND_OPS,
        fill: Sequence[float] = (124.0, 116.0, 104.0),
        translate_pct: float = 0.45,
    ) -> None:
        unknown = [o for o in ops if o not in RAND_OPS]
        if unknown or not ops:
            raise ValueError(
                f"RandAugment ops must be a non-empty subset of {RAND_OPS}, got {unknown}"
            )
        if num_ops < 0 or not 0.0 <= prob <= 1.0 or magnitude_std < 0:
            raise ValueError(
                f"RandAugment needs num_ops >= 0, prob in [0, 1], magnitude_std >= 0; got "
                f"{num_ops}, {prob}, {magnitude_std}"
            )
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = float(prob)
        self.ops = tuple(ops)
        self.fill = tuple(float(v) for v in fill)
        self.translate_pct = float(translate_pct)

    def restricted(
        self, ops: Sequence[str], prob: float | None = None, num_ops: int | None = None
    ) -> ReferenceRandAugment:
        """The same magnitudes with only ``ops`` (optionally another ``prob`` / ``num_ops``): for
        measuring one op's strength."""
        return ReferenceRandAugment(
            self.num_ops if num_ops is None else num_ops,
            self.magnitude,
            self.magnitude_std,
            self.prob if prob is None else prob,
            ops,
            self.fill,
            self.translate_pct,
        )

    def fill_for(self, channels: int) -> tuple[float, ...]:
        """The fill colour for ``channels`` channels (the grey mean of an RGB fill for 1)."""
        if len(self.fill) == channels:
            return self.fill
        return (sum(self.fill) / len(self.fill),) * channels

    def sample_magnitude(self) -> float:
        m = self.magnitude
        if self.magnitude_std > 0:
            m = float(torch.normal(torch.tensor(m), torch.tensor(self.magnitude_std)))
        return min(MAX_LEVEL, max(0.0, m))

    def apply(self, name: str, img: Tensor, level: float) -> Tensor:
        """Op ``name`` at ``level`` (0-10); signs and resampling drawn here."""
        frac = level / MAX_LEVEL
        c, h, w = img.shape
        fill = self.fill_for(c)
        bicubic = bool(torch.rand(()) < 0.5)  # the reference: random.choice(BILINEAR, BICUBIC)
        if name == "Rotate":
            return pil_affine(img, rotation_matrix(_signed(30.0 * frac), w, h), fill, bicubic)
        if name == "ShearX":
            return pil_affine(img, (1, _signed(0.3 * frac), 0, 0, 1, 0), fill, bicubic)
        if name == "ShearY":
            return pil_affine(img, (1, 0, 0, _signed(0.3 * frac), 1, 0), fill, bicubic)
        if name == "TranslateXRel":
            pixels = _signed(self.translate_pct * frac) * w
            return pil_affine(img, (1, 0, pixels, 0, 1, 0), fill, bicubic)
        if name == "TranslateYRel":
            pixels = _signed(self.translate_pct * frac) * h
            return pil_affine(img, (1, 0, 0, 0, 1, pixels), fill, bicubic)
        if name == "AutoContrast":
            return TF.autocontrast(img)
        if name == "Equalize":
            return TF.equalize(img)
        if name == "Invert":
            return TF.invert(img)
        if name == "PosterizeTpu":
            return TF.posterize(img, int(frac * 4))
        if name == "Solarize":
            threshold = int(frac * 256)
            return img if threshold > 255 else TF.solarize(img, threshold)
        if name == "SolarizeAdd":
            add = int(frac * 110)
            return torch.where(img < 128, (img.int() + add).clamp(max=255).to(img.dtype), img)
        factor = 0.1 + 1.8 * frac
        if name == "Color":
            return img if c == 1 else TF.adjust_saturation(img, factor)
        if name == "Contrast":
            return TF.adjust_contrast(img, factor)
        if name == "Brightness":
            return TF.adjust_brightness(img, factor)
        return TF.adjust_sharpness(img, factor)  # Sharpness

    def __call__(self, img: Tensor) -> Tensor:
        if img.dtype != torch.uint8 or img.dim() != 3:
            raise ValueError(f"RandAugment expects a uint8 [C, H, W] image, got {img.dtype}")
        for _ in range(self.num_ops):
            name = self.ops[int(torch.randint(len(self.ops), ()))]
            if float(torch.rand(())) > self.prob:
                continue
            img = self.apply(name, img, self.sample_magnitude())
        return img

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude}, "
            f"magnitude_std={self.magnitude_std}, prob={self.prob}, ops={len(self.ops)}, "
            f"translate_pct={self.translate_pct})"
        )
