"""Multi-view augmentations (torchvision.transforms.v2) for NPID, MoCo v2, BYOL and InfoMin.

Pipelines take a ``uint8 [C, H, W]`` tensor (not a PIL image: tensor ops are several times faster on
32x32 images), do geometric and photometric ops in uint8, then convert to float and normalise.
Grayscale data (``in_channels == 1``): colour jitter keeps brightness and contrast only and the
random-grayscale op is dropped. The Gaussian-blur kernel is about 10% of the image side, odd, at
least 3 (23 at 224 px as in MoCo v2, 3 at 28/32 px).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUGMENTATIONS = ("npid", "mocov2", "mocov2_erasing", "byol", "infomin", "grayscale")

Transform = Callable[[torch.Tensor], torch.Tensor]


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel of about 10% of the image side, at least 3."""
    k = int(0.1 * image_size)
    k = max(3, k)
    return k if k % 2 == 1 else k + 1


class MultiViewTransform:
    """Applies ``transforms[v % len(transforms)]`` for view ``v``; returns a list of views."""

    def __init__(self, transforms: Sequence[Transform], num_views: int) -> None:
        if num_views < 1:
            raise ValueError(f"data.num_views must be >= 1, got {num_views}")
        self.transforms = list(transforms)
        self.num_views = num_views

    def __call__(self, img: torch.Tensor) -> list[torch.Tensor]:
        return [self.transforms[v % len(self.transforms)](img) for v in range(self.num_views)]

    def __repr__(self) -> str:
        body = "\n".join(f"  view {i}: {t}" for i, t in enumerate(self.transforms))
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
    blur = v2.GaussianBlur(blur_kernel_size(image_size), sigma=(0.1, 2.0))
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
    # infomin
    ops = [
        rrc,
        flip,
        v2.RandomApply([_jitter(c, 0.8, 0.8, 0.8, 0.2)], p=0.8),
        *_blur(image_size, 0.5),
        v2.RandAugment(num_ops=2, magnitude=10),
        *_grayscale(c, 0.2),
        *_finish(mean, std),
    ]
    return [v2.Compose(ops)]


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
