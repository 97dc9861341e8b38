"""Batched multi-view augmentation on the training device (``data.augment_on=device``).

The per-sample CPU pipelines of :mod:`.transforms` re-implemented as one batched pass per op over a
``uint8 [B, C, H, W]`` batch already on the model's device (GPU, or the CPU itself, where it also
removes the loader workers' competition for cores). Every sample draws its own parameters from the
same distributions as the CPU recipe:

* RandomResizedCrop: torchvision's sampler (10 tries of area ~ U(scale)·HW, log-aspect
  ~ U(log 3/4, log 4/3), then the central fallback), crop + bilinear resize with ``roi_align``
  (2x2 samples per output pixel, which also anti-aliases down-scaling);
* horizontal flip p 0.5; ColorJitter (brightness, contrast, saturation, hue) in a random order
  *per sample*, as torchvision draws it; random grayscale; Gaussian blur with a per-sample
  ``σ ~ U(0.1, 2)`` on a kernel of ``2·ceil(3σ_max)+1`` taps; solarize; RandomErasing;
* InfoMin (``infomin``, ``infomin_jigsaw``): jitter (0.8, 0.8, 0.8, 0.2) p 0.8, blur p 0.5, the
  reference's RandAugment batched (:mod:`.batch_randaugment`: per-sample ops, magnitudes, signs
  and resampling, the mean colour as fill, uint8 rounding after every op), then grayscale p 0.2,
  in that order (the other recipes: grayscale before blur); ``infomin_jigsaw``'s last view is
  the jigsaw image (crop scale (0.6, 1) at ``round(255/224·size)``, flip, normalise).

Random numbers come from a ``torch.Generator`` seeded per batch by the caller (seed, epoch, the
batch's sample indices), so a resumed run replays the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .batch_randaugment import BatchRandAugment
from .transforms import JIGSAW_CROP_SCALE, JIGSAW_SIZE_RATIO

BATCH_RECIPES = (
    "npid",
    "mocov2",
    "mocov2_erasing",
    "byol",
    "grayscale",
    "infomin",
    "infomin_jigsaw",
)


@dataclass(frozen=True)
class ViewRecipe:
    """One view's pipeline: crop, flip, jitter (with probability), grayscale, blur, solarize,
    erasing; with ``randaugment`` (InfoMin) the order is jitter, blur, RandAugment, grayscale.
    The flip commutes with the pointwise and blur ops, so its place does not matter (RandAugment
    comes after it, as on the CPU). ``crop_scale`` (None: ``(crop_min_scale, 1)``) and
    ``size_ratio`` (output side / ``image_size``) set the crop: InfoMin's jigsaw view."""

    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # b, c, s, h
    jitter_p: float = 1.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    solarize_p: float = 0.0
    erasing: bool = False
    randaugment: bool = False
    crop_scale: tuple[float, float] | None = None
    size_ratio: float = 1.0


JIGSAW_RECIPE = ViewRecipe(crop_scale=JIGSAW_CROP_SCALE, size_ratio=JIGSAW_SIZE_RATIO)


def view_recipes(augmentation: str, in_channels: int) -> list[ViewRecipe]:
    """The per-view recipes matching the CPU pipelines of the same name."""
    if augmentation not in BATCH_RECIPES:
        raise ValueError(
            f"data.augmentation={augmentation!r} has no batched version for data.augment_on="
            f"device; valid: {', '.join(BATCH_RECIPES)} (or data.augment_on=loader)"
        )
    gray = in_channels == 1

    def jit(b: float, c: float, s: float, h: float) -> tuple[float, float, float, float]:
        return (b, c, 0.0, 0.0) if gray else (b, c, s, h)

    g = 0.0 if gray else 0.2
    if augmentation == "grayscale":
        return [ViewRecipe((0.4, 0.4, 0.0, 0.0), 0.8)]
    if augmentation == "npid":
        return [ViewRecipe(jit(0.4, 0.4, 0.4, 0.4), 1.0, g)]
    if augmentation in ("mocov2", "mocov2_erasing"):
        erase = augmentation == "mocov2_erasing"
        return [ViewRecipe(jit(0.4, 0.4, 0.4, 0.1), 0.8, g, 0.5, 0.0, erase)]
    if augmentation in ("infomin", "infomin_jigsaw"):  # the jigsaw view: final_recipe
        return [ViewRecipe(jit(0.8, 0.8, 0.8, 0.2), 0.8, g, 0.5, randaugment=True)]
    return [  # byol: asymmetric blur / solarize
        ViewRecipe(jit(0.4, 0.4, 0.2, 0.1), 0.8, g, 1.0, 0.0),
        ViewRecipe(jit(0.4, 0.4, 0.2, 0.1), 0.8, g, 0.1, 0.2),
    ]


def final_recipe(augmentation: str) -> ViewRecipe | None:
    """The recipe of a different last view (``infomin_jigsaw``'s jigsaw image), else None."""
    return JIGSAW_RECIPE if augmentation == "infomin_jigsaw" else None


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, *shape: int) -> Tensor:
    return torch.rand((n, *shape), generator=gen) * (hi - lo) + lo


def _draw_rects(
    n: int,
    area: Tensor | float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """torchvision's 10 tries per sample: target area ~ U(scale)·area, log-aspect ~ U(log ratio);
    returns ``(sqrt(target·aspect), sqrt(target/aspect))`` rounded, each ``[n, 10]``."""
    target = _uniform(n, scale[0], scale[1], gen, 10) * area
    aspect = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen, 10))
    return torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))


def _place_first_fit(
    h: Tensor,
    w: Tensor,
    ok: Tensor,
    height: Tensor | float,
    width: Tensor | float,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The first try that fits (``ok``) per sample, placed uniformly: ``(top, left, h, w,
    any_ok)``, each ``[n]``."""
    n = h.shape[0]
    any_ok = ok.any(dim=1)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    rows = torch.arange(n)
    h, w = h[rows, first], w[rows, first]
    u = torch.rand((n, 2), generator=gen)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    return top, left, h, w, any_ok


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> Tensor:
    """``[n, 4]`` boxes ``(top, left, h, w)`` drawn like ``RandomResizedCrop.make_params`` on
    ``n`` images of ``height x width``."""
    return sample_crop_boxes_sized(
        torch.full((n,), height), torch.full((n,), width), scale, ratio, gen
    )


def sample_crop_boxes_sized(
    heights: Tensor,
    widths: Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator,
) -> Tensor:
    """:func:`sample_crop_boxes` with a size per sample: ``[n, 4]`` boxes
    ``(top, left, h, w)`` drawn like ``RandomResizedCrop.make_params`` on images of
    ``heights[i] x widths[i]`` (same random draws, so equal boxes when all sizes are equal)."""
    n = len(heights)
    height = heights.to(torch.float32)
    width = widths.to(torch.float32)
    w, h = _draw_rects(n, (height * width)[:, None], scale, ratio, gen)
    ok = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    top, left, h, w, any_ok = _place_first_fit(h, w, ok, height, width, gen)
    in_ratio = width / height  # fallback: the central crop of the closest allowed aspect
    lo, hi = min(ratio), max(ratio)
    fw = torch.where(in_ratio > hi, torch.round(height * hi), width)
    fh = torch.where(in_ratio < lo, torch.round(width / lo), height)
    ftop = torch.div(height - fh, 2, rounding_mode="floor")
    fleft = torch.div(width - fw, 2, rounding_mode="floor")
    boxes = torch.stack([top, left, h, w], dim=1)
    fallback = torch.stack([ftop, fleft, fh, fw], dim=1)
    return torch.where(any_ok[:, None], boxes, fallback)


def resized_crop(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop ``boxes`` (top, left, h, w) of every image and resize to ``size`` (bilinear)."""
    from torchvision.ops import roi_align

    top, left, h, w = boxes.to(x.device, torch.float32).unbind(1)
    rois = torch.stack(
        [torch.arange(len(x), device=x.device, dtype=torch.float32), left, top, left + w, top + h],
        dim=1,
    )
    return roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, ratio: Tensor) -> Tensor:
    return (ratio * a + (1.0 - ratio) * b).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = torch.stack(
        [
            torch.stack([v, q, p, p, t, v], 1),
            torch.stack([t, v, v, q, p, p], 1),
            torch.stack([p, p, t, v, v, q], 1),
        ],
        1,
    )  # [B, 3, 6, H, W]
    idx = i[:, None, None].expand(-1, 3, 1, -1, -1)
    return table.gather(2, idx).squeeze(2)


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


def color_jitter(
    x: Tensor, strengths: Sequence[float], apply: Tensor, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """torchvision ``ColorJitter`` per sample, ops in a random order per sample; rows where
    ``apply`` is false are returned unchanged. Returns ``(images, factors [B, 4])`` (identity
    factors 1, 1, 1, 0 for ops that are off)."""
    n = x.shape[0]
    b, c, s, h = strengths
    factors = torch.stack(
        [
            _uniform(n, max(0.0, 1 - b), 1 + b, gen),
            _uniform(n, max(0.0, 1 - c), 1 + c, gen),
            _uniform(n, max(0.0, 1 - s), 1 + s, gen),
            _uniform(n, -h, h, gen),
        ],
        dim=1,
    )
    enabled = [b > 0, c > 0, s > 0, h > 0]
    order = torch.argsort(torch.rand((n, 4), generator=gen), dim=1)
    x = x.clone()
    for position in range(4):
        for op in range(4):
            if not enabled[op]:
                continue
            rows = torch.nonzero((order[:, position] == op) & apply).flatten()
            if rows.numel() == 0:
                continue
            sel = rows.to(x.device)
            xs, f = x.index_select(0, sel), factors[rows, op].to(x.device).view(-1, 1, 1, 1)
            if op == 0:
                y = (xs * f).clamp_(0.0, 1.0)
            elif op == 1:
                y = _blend(xs, _gray(xs).mean(dim=(1, 2, 3), keepdim=True), f)
            elif op == 2:
                y = _blend(xs, _gray(xs), f)
            else:
                y = _adjust_hue(xs, f.flatten())
            x.index_copy_(0, sel, y)
    off = torch.tensor([1.0, 1.0, 1.0, 0.0])
    factors = torch.where(apply[:, None], factors, off)
    for op, on in enumerate(enabled):
        if not on:
            factors[:, op] = off[op]
    return x, factors


def gaussian_blur(x: Tensor, sigma: Tensor, apply: Tensor, max_sigma: float = 2.0) -> Tensor:
    """Per-sample Gaussian blur (reflect padding, separable), kernel ``2·ceil(3σ_max)+1`` taps
    clipped to the image; rows where ``apply`` is false are unchanged."""
    n, ch, height, width = x.shape
    radius = min(int(math.ceil(3 * max_sigma)), height - 1, width - 1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.device, x.dtype)
    k = kernel.repeat_interleave(ch, dim=0)  # [B*C, K]
    y = F.pad(x.reshape(1, n * ch, height, width), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * ch)
    y = F.conv2d(y, k[:, None, :, None], groups=n * ch).view_as(x)
    return torch.where(apply.to(x.device).view(-1, 1, 1, 1), y, x)


def erasing_mask(
    n: int,
    height: int,
    width: int,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> Tensor:
    """``[n, 1, H, W]`` boolean masks of torchvision's ``RandomErasing(p=1)`` rectangles."""
    h, w = _draw_rects(n, float(height * width), scale, ratio, gen)
    top, left, h, w, any_ok = _place_first_fit(h, w, (h < height) & (w < width), height, width, gen)
    ys = torch.arange(height).view(1, height, 1)
    xs = torch.arange(width).view(1, 1, width)
    mask = (
        (ys >= top.view(-1, 1, 1))
        & (ys < (top + h).view(-1, 1, 1))
        & (xs >= left.view(-1, 1, 1))
        & (xs < (left + w).view(-1, 1, 1))
    )
    return (mask & any_ok.view(-1, 1, 1)).unsqueeze(1)


class BatchMultiViewAugment:
    """``uint8 [B, C, H, W]`` batch -> list of ``num_views`` normalised float views.

    View ``v`` uses recipe ``v % len(recipes)`` (BYOL's asymmetric pair), as
    :class:`~.transforms.MultiViewTransform`; ``infomin_jigsaw``'s last view is the jigsaw image.
    """

    def __init__(
        self,
        augmentation: str,
        num_views: int,
        image_size: int,
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_min_scale: float = 0.2,
    ) -> None:
        self.recipes = view_recipes(augmentation, in_channels)
        self.final = final_recipe(augmentation)
        if num_views < 1 or (self.final is not None and num_views < 2):
            low = 2 if self.final is not None else 1
            raise ValueError(
                f"data.num_views must be >= {low} for data.augmentation={augmentation!r}, got "
                f"{num_views}"
            )
        self.augmentation = augmentation
        self.num_views = num_views
        self.image_size = image_size
        self.in_channels = in_channels
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (float(crop_min_scale), 1.0)
        self.ratio = (3.0 / 4.0, 4.0 / 3.0)
        fill = [min(255.0, round(255.0 * m)) for m in mean]  # transforms._infomin_view's fill
        self.randaugment = BatchRandAugment(num_ops=2, magnitude=10, magnitude_std=0.5, fill=fill)

    def recipe(self, v: int) -> ViewRecipe:
        """View ``v``'s recipe."""
        if self.final is not None and v == self.num_views - 1:
            return self.final
        return self.recipes[v % len(self.recipes)]

    def crop_scale(self, recipe: ViewRecipe) -> tuple[float, float]:
        return self.scale if recipe.crop_scale is None else recipe.crop_scale

    def view_size(self, recipe: ViewRecipe) -> int:
        """The side of a view (``image_size``, or the jigsaw view's ``round(255/224·size)``)."""
        if recipe.size_ratio == 1.0:
            return self.image_size
        return int(round(self.image_size * recipe.size_ratio))

    def view(self, images: Tensor, recipe: ViewRecipe, gen: torch.Generator) -> Tensor:
        """One augmented, normalised view of every image: the crop, then :meth:`finish`."""
        n, _, height, width = images.shape
        x = images.float().div_(255.0)
        boxes = sample_crop_boxes(n, height, width, self.crop_scale(recipe), self.ratio, gen)
        crops = resized_crop(x, boxes, self.view_size(recipe)).clamp_(0.0, 1.0)
        return self.finish(crops, recipe, gen)

    def _grayscale(self, x: Tensor, recipe: ViewRecipe, gen: torch.Generator) -> Tensor:
        if recipe.grayscale_p > 0 and x.shape[1] == 3:
            gray = (torch.rand(x.shape[0], generator=gen) < recipe.grayscale_p).to(x.device)
            x = torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        return x

    def _blur(self, x: Tensor, recipe: ViewRecipe, gen: torch.Generator) -> Tensor:
        if recipe.blur_p > 0:
            n = x.shape[0]
            on = torch.rand(n, generator=gen) < recipe.blur_p
            sigma = _uniform(n, 0.1, 2.0, gen)
            x = gaussian_blur(x, sigma, on)
        return x

    def finish(self, x: Tensor, recipe: ViewRecipe, gen: torch.Generator) -> Tensor:
        """Everything after the crop, on ``float [B, C, size, size]`` crops in [0, 1]."""
        n = x.shape[0]
        flip = torch.rand(n, generator=gen) < 0.5
        jitter_on = torch.rand(n, generator=gen) < recipe.jitter_p
        x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        if any(v > 0 for v in recipe.jitter):
            x, _ = color_jitter(x, recipe.jitter, jitter_on, gen)
        if recipe.randaugment:  # InfoMin's order: blur, RandAugment, grayscale
            x = self._blur(x, recipe, gen)
            x = self._grayscale(self.randaugment(x, gen), recipe, gen)
        else:
            x = self._blur(self._grayscale(x, recipe, gen), recipe, gen)
        if recipe.solarize_p > 0:
            on = (torch.rand(n, generator=gen) < recipe.solarize_p).to(x.device)
            x = torch.where(on.view(-1, 1, 1, 1) & (x >= 128.0 / 255.0), 1.0 - x, x)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if recipe.erasing:
            size = x.shape[-1]
            x = x.masked_fill(erasing_mask(n, size, size, gen).to(x.device), 0.0)
        return x

    def __call__(self, images: Tensor, gen: torch.Generator) -> list[Tensor]:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                "batched augmentation expects a uint8 [B, C, H, W] batch, got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        return [self.view(images, self.recipe(v), gen) for v in range(self.num_views)]
