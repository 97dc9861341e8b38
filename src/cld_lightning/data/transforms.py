"""Multi-view augmentations (torchvision.transforms.v2) for NPID, MoCo v2, BYOL and InfoMin.

Pipelines take a ``uint8 [C, H, W]`` tensor (not a PIL image: tensor ops are several times faster on
32x32 images), do geometric and photometric ops in uint8, then convert to float and normalise.
Grayscale data (``in_channels == 1``): colour jitter keeps brightness and contrast only and the
random-grayscale op is dropped. Gaussian blur draws ``σ ~ U(0.1, 2)`` per image and derives the
kernel from it (``2·ceil(3σ)+1`` taps, clipped to the image), so σ means what it means in the
reference's PIL ``GaussianBlur(radius=σ)`` at every image size. InfoMin uses the reference's
RandAugment (:mod:`.randaugment`, full strength at m = 10); ``infomin_jigsaw`` adds InfoMin's
jigsaw image as the last view (a plain crop, see :func:`jigsaw_view_transform`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .randaugment import ReferenceRandAugment

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUGMENTATIONS = (
    "npid",
    "mocov2",
    "mocov2_erasing",
    "byol",
    "infomin",
    "grayscale",
    "infomin_jigsaw",
)
# InfoMin's jigsaw image (the reference at 224 px: RandomResizedCrop(255, scale (0.6, 1)), flip)
JIGSAW_SIZE_RATIO = 255 / 224
JIGSAW_CROP_SCALE = (0.6, 1.0)

Transform = Callable[[torch.Tensor], torch.Tensor]


def gaussian_kernel_size(sigma: float, image_size: int | None = None) -> int:
    """``2·ceil(3σ)+1`` taps (the Gaussian to 3σ), at most ``2·(image_size-1)+1`` (reflect padding
    needs a radius below the side)."""
    radius = max(1, math.ceil(3.0 * sigma))
    if image_size is not None:
        radius = min(radius, image_size - 1)
    return 2 * radius + 1


class GaussianBlur:
    """Blur with ``σ ~ U(sigma)`` per image and a kernel derived from σ (``2·ceil(3σ)+1``)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * float(torch.rand(()))
        k = gaussian_kernel_size(sigma, min(img.shape[-2:]))
        return TF.gaussian_blur(img, [k, k], [sigma, sigma])

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma}, kernel=2*ceil(3*sigma)+1)"


class MultiViewTransform:
    """Applies ``transforms[v % len(transforms)]`` for view ``v``; returns a list of views.

    ``final``: a different transform for the last view (InfoMin's jigsaw image).
    """

    def __init__(
        self, transforms: Sequence[Transform], num_views: int, final: Transform | None = None
    ) -> None:
        if num_views < 1 or (final is not None and num_views < 2):
            low = 2 if final is not None else 1
            raise ValueError(f"data.num_views must be >= {low}, got {num_views}")
        self.transforms = list(transforms)
        self.num_views = num_views
        self.final = final

    def __call__(self, img: torch.Tensor) -> list[torch.Tensor]:
        n = self.num_views - (self.final is not None)
        views = [self.transforms[v % len(self.transforms)](img) for v in range(n)]
        return views + ([self.final(img)] if self.final is not None else [])

    def __repr__(self) -> str:
        body = "\n".join(f"  view {i}: {t}" for i, t in enumerate(self.transforms))
        if self.final is not None:
            body += f"\n  last view: {self.final}"
        return f"MultiViewTransform(num_views={self.num_views},\n{body})"


def _jitter(in_channels: int, b: float, c: float, s: float, h: float) -> v2.Transform:
    if in_channels == 1:
        return v2.ColorJitter(brightness=b, contrast=c)
    return v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)


def _grayscale(in_channels: int, p: float) -> list[v2.Transform]:
    return [] if in_channels == 1 else [v2.RandomGrayscale(p=p)]


def _blur(image_size: int, p: float) -> list[v2.Transform]:
    if p <= 0:
        return []
    blur = GaussianBlur(sigma=(0.1, 2.0))
    return [blur] if p >= 1 else [v2.RandomApply([blur], p=p)]


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def build_view_transforms(
    augmentation: str,
    image_size: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_min_scale: float = 0.2,
) -> list[v2.Compose]:
    """The per-view pipelines of a recipe (one entry, or two for BYOL's asymmetric views)."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(
            f"unknown data.augmentation={augmentation!r}; valid: {', '.join(AUGMENTATIONS)}"
        )
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
    c = in_channels
    rrc = v2.RandomResizedCrop(image_size, scale=(crop_min_scale, 1.0), antialias=True)
    flip = v2.RandomHorizontalFlip()
    if augmentation == "grayscale":  # small single-channel images (Fashion-MNIST): no colour ops
        ops = [rrc, flip, v2.RandomApply([v2.ColorJitter(0.4, 0.4)], p=0.8), *_finish(mean, std)]
        return [v2.Compose(ops)]
    if augmentation == "npid":
        ops = [rrc, _jitter(c, 0.4, 0.4, 0.4, 0.4), *_grayscale(c, 0.2), flip, *_finish(mean, std)]
        return [v2.Compose(ops)]
    if augmentation in ("mocov2", "mocov2_erasing"):
        ops = [
            rrc,
            v2.RandomApply([_jitter(c, 0.4, 0.4, 0.4, 0.1)], p=0.8),
            *_grayscale(c, 0.2),
            *_blur(image_size, 0.5),
            flip,
            *_finish(mean, std),
        ]
        if augmentation == "mocov2_erasing":
            ops.append(v2.RandomErasing(p=1.0))
        return [v2.Compose(ops)]
    if augmentation == "byol":
        return _byol_views(rrc, flip, c, image_size, mean, std)
    return [_infomin_view(rrc, flip, c, image_size, mean, std)]


def _byol_views(
    rrc: v2.Transform,
    flip: v2.Transform,
    c: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> list[v2.Compose]:
    """BYOL's asymmetric pair: blur p 1.0 / 0.1, solarize p 0.0 / 0.2."""
    views = []
    for blur_p, solarize_p in ((1.0, 0.0), (0.1, 0.2)):
        ops = [
            rrc,
            flip,
            v2.RandomApply([_jitter(c, 0.4, 0.4, 0.2, 0.1)], p=0.8),
            *_grayscale(c, 0.2),
            *_blur(image_size, blur_p),
        ]
        if solarize_p > 0:
            ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))  # uint8 scale
        views.append(v2.Compose(ops + _finish(mean, std)))
    return views


def _infomin_view(
    rrc: v2.Transform,
    flip: v2.Transform,
    c: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> v2.Compose:
    """infomin, infomin_jigsaw: the reference's aug "D" (RandAugment rand-n2-m10-mstd0.5, filled
    with the mean colour)."""
    fill = [min(255.0, round(255.0 * m)) for m in mean]
    ops = [
        rrc,
        flip,
        v2.RandomApply([_jitter(c, 0.8, 0.8, 0.8, 0.2)], p=0.8),
        *_blur(image_size, 0.5),
        ReferenceRandAugment(num_ops=2, magnitude=10, magnitude_std=0.5, fill=fill),
        *_grayscale(c, 0.2),
        *_finish(mean, std),
    ]
    return v2.Compose(ops)


def jigsaw_view_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """InfoMin's jigsaw image: a plain crop, no colour or blur (the reference's
    ``jigsaw_transform``): ``RandomResizedCrop(round(255/224·size), scale (0.6, 1))``, flip,
    normalise. The method cuts it into 3x3 cells and a jittered patch per cell (64 px in 85-px
    cells at 224, ``method.jigsaw_patch_size``)."""
    size = int(round(image_size * JIGSAW_SIZE_RATIO))
    rrc = v2.RandomResizedCrop(size, scale=JIGSAW_CROP_SCALE, antialias=True)
    return v2.Compose([rrc, v2.RandomHorizontalFlip(), *_finish(mean, std)])


def build_multiview_transform(
    augmentation: str,
    num_views: int,
    image_size: int,
    in_channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_min_scale: float = 0.2,
) -> MultiViewTransform:
    """``num_views`` augmented views of one image, as a list of normalised float tensors."""
    views = build_view_transforms(augmentation, image_size, in_channels, mean, std, crop_min_scale)
    if augmentation == "infomin_jigsaw":  # views 0..n-2: InfoMin crops; the last: the jigsaw image
        return MultiViewTransform(
            views, num_views, final=jigsaw_view_transform(image_size, mean, std)
        )
    return MultiViewTransform(views, num_views)


def build_eval_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize_to: int | None = None,
) -> v2.Compose:
    """Test transform: optional ``Resize(resize_to)`` + ``CenterCrop(image_size)``, normalise."""
    ops: list[v2.Transform] = []
    if resize_to is not None:
        ops += [v2.Resize(resize_to, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(ops + _finish(mean, std))
