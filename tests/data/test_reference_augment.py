"""Augmentations as the reference runs them, measured on sampled outputs: InfoMin's RandAugment
at full strength (rotate 30°, shear 0.3, translate 0.45·side), Gaussian blur whose kernel follows
σ at 32 and 224 px, and InfoMin's jigsaw image (a plain 255/224 crop, scale 0.6-1)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2

from cld_lightning.data import GaussianBlur, build_multiview_transform, gaussian_kernel_size
from cld_lightning.data.datasets import single_thread
from cld_lightning.data.randaugment import RAND_OPS, ReferenceRandAugment, pil_affine
from cld_lightning.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_view_transforms,
)

SIZE = 224


@pytest.fixture(autouse=True)
def _one_thread():
    """Per-image ops run single-threaded, as in the loader workers (MultiViewDataset)."""
    with single_thread():
        yield


def recipe_randaugment(size: int = SIZE) -> ReferenceRandAugment:
    """The RandAugment op of the InfoMin recipe itself."""
    (t,) = build_view_transforms("infomin", size, 3, IMAGENET_MEAN, IMAGENET_STD)
    found = [o for o in t.transforms if isinstance(o, ReferenceRandAugment)]
    assert len(found) == 1, "the InfoMin recipe must use the reference RandAugment"
    return found[0]


def bright_mask(img: torch.Tensor) -> torch.Tensor:
    """Pixels of the white drawing (the fill is the ImageNet mean, ~(124, 116, 104))."""
    return img.float().mean(dim=0) > 200


def coords(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return xs.float() + 0.5, ys.float() + 0.5


def sample(op: ReferenceRandAugment, img: torch.Tensor, n: int = 40) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [op(img) for _ in range(n)]


def test_recipe_randaugment_settings_are_the_reference_string() -> None:
    ra = recipe_randaugment()
    assert (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob) == (2, 10.0, 0.5, 0.5)
    assert ra.ops == RAND_OPS and len(ra.ops) == 15
    assert ra.fill == (124.0, 116.0, 104.0)  # the reference's img_mean for ImageNet
    assert ra.translate_pct == 0.45


def test_rotation_reaches_30_degrees() -> None:
    img = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    img[:, 111:114, 52:172] = 255  # a horizontal bar through the centre
    angles = []
    for out in sample(recipe_randaugment().restricted(["Rotate"], prob=1.0, num_ops=1), img):
        x, y = coords(bright_mask(out))
        cx, cy = x - x.mean(), y - y.mean()
        theta = 0.5 * math.atan2(2 * float((cx * cy).mean()), float((cx**2 - cy**2).mean()))
        angles.append(math.degrees(theta))
    magnitudes = sorted(abs(a) for a in angles)
    assert magnitudes[-1] <= 30.6  # m is clipped to 10: at most 30°
    assert magnitudes[len(magnitudes) // 2] >= 28.5  # m ~ N(10, 0.5) clipped: mostly ~30°
    assert 0.2 < sum(a > 0 for a in angles) / len(angles) < 0.8  # both directions
    # torchvision's RandAugment(magnitude=10) rotates by 10° only: about a third


def test_shear_reaches_0_3() -> None:
    img = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    img[:, 40:184, 111:114] = 255  # a vertical bar
    factors = []
    for out in sample(recipe_randaugment().restricted(["ShearX"], prob=1.0, num_ops=1), img):
        x, y = coords(bright_mask(out))
        cy = y - y.mean()
        factors.append(-float((cy * (x - x.mean())).sum() / (cy**2).sum()))  # x = x0 - f·y
    magnitudes = sorted(abs(f) for f in factors)
    assert magnitudes[-1] <= 0.31
    assert magnitudes[len(magnitudes) // 2] >= 0.28
    assert 0.2 < sum(f > 0 for f in factors) / len(factors) < 0.8


def test_shear_is_about_the_top_left_corner_as_pil() -> None:
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[:, 0:2, 30:34] = 255  # near the top row: a shear about y=0 barely moves it
    out = pil_affine(img, (1, 0.3, 0, 0, 1, 0), (0, 0, 0), bicubic=False)
    x, _ = coords(bright_mask(out))
    assert abs(float(x.mean()) - 32.0) < 1.0


@pytest.mark.parametrize("size", [32, SIZE])
def test_translate_reaches_0_45_of_the_side(size: int) -> None:
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    half = max(2, size // 20)
    c = size // 2
    img[:, c - half : c + half, c - half : c + half] = 255
    x0, _ = coords(bright_mask(img))
    shifts = []
    for out in sample(
        recipe_randaugment(size).restricted(["TranslateXRel"], prob=1.0, num_ops=1), img
    ):
        x, _ = coords(bright_mask(out))
        shifts.append((float(x.mean()) - float(x0.mean())) / size)
    magnitudes = sorted(abs(s) for s in shifts)
    assert magnitudes[-1] <= 0.45 + 1.0 / size
    assert magnitudes[len(magnitudes) // 2] >= 0.43 - 1.0 / size  # torchvision's m=10: 0.15
    assert 0.2 < sum(s > 0 for s in shifts) / len(shifts) < 0.8


def test_each_drawn_op_applies_with_probability_one_half() -> None:
    """With m fixed at 10, Solarize (threshold 256) is the only identity among the 15 ops, so an
    image comes out unchanged with P = (0.5 + 0.5/15)² ≈ 0.284 (two draws with replacement)."""
    torch.manual_seed(1)
    img = torch.randint(30, 220, (3, 32, 32), dtype=torch.uint8)  # AutoContrast changes it
    ra = ReferenceRandAugment(magnitude_std=0.0, fill=(124, 116, 104))
    same = sum(torch.equal(ra(img), img) for _ in range(600)) / 600
    assert abs(same - (0.5 + 0.5 / 15) ** 2) < 0.06


def _blur_ops(size: int) -> list[GaussianBlur]:
    out = []
    for aug in ("mocov2", "infomin"):
        for t in build_view_transforms(aug, size, 3, CIFAR_MEAN, CIFAR_STD):
            for op in t.transforms:
                inner = op.transforms if isinstance(op, v2.RandomApply) else [op]
                out += [o for o in inner if isinstance(o, GaussianBlur)]
    return out


@pytest.mark.parametrize("size", [32, SIZE])
def test_blur_sigma_means_what_it_says_at_every_size(size: int) -> None:
    ops = _blur_ops(size)
    assert len(ops) == 2 and all(o.sigma == (0.1, 2.0) for o in ops)
    impulse = torch.zeros(3, size, size)
    impulse[:, size // 2, size // 2] = 1.0
    pos = torch.arange(size).float()
    torch.manual_seed(0)
    sigmas = []
    for _ in range(150):
        w = ops[0](impulse).sum(dim=(0, 1))  # the horizontal profile of the blurred impulse
        mu = (w * pos).sum() / w.sum()
        sd = float(((w * (pos - mu) ** 2).sum() / w.sum()).sqrt())
        width = int((w > 1e-12).sum())
        sigmas.append(sd)
        if sd >= 0.8:  # the kernel follows σ: 2·ceil(3σ)+1 taps (σ measured within 2%)
            assert width in {gaussian_kernel_size(sd), gaussian_kernel_size(1.02 * sd)}
    # σ ~ U(0.1, 2): a 3x3 kernel at 32 px (the former 10%-of-side rule) stops at σ ≈ 0.8
    assert max(sigmas) > 1.85
    assert abs(sum(sigmas) / len(sigmas) - 1.05) < 0.12
    assert 0.15 < sum(s > 1.5 for s in sigmas) / len(sigmas) < 0.4  # ≈ 0.26


def test_jigsaw_image_is_a_plain_large_crop() -> None:
    """The last view of ``infomin_jigsaw``: 255/224 of the side, scale (0.6, 1), flip, no colour:
    a constant-colour image stays that colour; an x-ramp shows the crop's width."""
    t = build_multiview_transform("infomin_jigsaw", 4, SIZE, 3, IMAGENET_MEAN, IMAGENET_STD)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    colour = torch.tensor([200, 50, 30], dtype=torch.uint8).view(3, 1, 1)
    flat = colour.expand(3, 256, 256).contiguous()
    torch.manual_seed(0)
    altered = 0
    for _ in range(10):
        views = t(flat)
        assert [tuple(v.shape) for v in views] == [(3, 224, 224)] * 3 + [(3, 255, 255)]
        jig = (views[-1] * std + mean) * 255
        torch.testing.assert_close(jig, colour.float().expand_as(jig), atol=0.5, rtol=0)
        q = (views[0] * std + mean) * 255
        altered += int((q - colour.float()).abs().max() > 5)
    assert altered >= 5  # the InfoMin crops are colour-augmented, the jigsaw image is not
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 256, 256).contiguous()
    widths = []
    for _ in range(60):
        row = ((t(ramp)[-1] * std + mean) * 255)[0, 127]
        widths.append(float((row.max() - row.min()) / 255))
    # crop width = sqrt(scale·ratio)·side, scale in [0.6, 1], ratio in [3/4, 4/3]
    assert min(widths) >= math.sqrt(0.6 * 0.75) - 0.03
    assert max(widths) > 0.9


def test_jigsaw_view_needs_two_views() -> None:
    with pytest.raises(ValueError, match="data.num_views must be >= 2"):
        build_multiview_transform("infomin_jigsaw", 1, 32, 3, CIFAR_MEAN, CIFAR_STD)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 8, 8)])
@pytest.mark.parametrize("name", RAND_OPS)
def test_every_op_keeps_shape_and_dtype_and_level_zero_geometry_is_identity(name, shape) -> None:
    torch.manual_seed(0)
    img = torch.randint(0, 256, shape, dtype=torch.uint8)
    ra = ReferenceRandAugment(fill=(124.0,) * shape[0])
    out = ra.apply(name, img, 10.0)
    assert out.shape == img.shape and out.dtype == torch.uint8
    if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        assert torch.equal(ra.apply(name, img, 0.0), img)  # level 0: the identity warp
