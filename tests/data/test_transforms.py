"""Multi-view transforms: views, shapes, channels, recipes, grayscale handling, eval transform."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from cld_lightning.data import (
    AUGMENTATIONS,
    GaussianBlur,
    build_eval_transform,
    build_multiview_transform,
    gaussian_kernel_size,
)
from cld_lightning.data.randaugment import ReferenceRandAugment
from cld_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, build_view_transforms


def _ops(compose: v2.Compose) -> list:
    """Flatten Compose/RandomApply into the list of leaf transforms."""
    out = []
    for t in compose.transforms:
        out += list(t.transforms) if isinstance(t, v2.RandomApply) else [t]
    return out


def _img(c: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("aug", AUGMENTATIONS)
@pytest.mark.parametrize("channels,size", [(3, 32), (1, 28)])
def test_views_shapes_and_differ(aug, channels, size):
    mean, std = ((0.5,) * channels, (0.25,) * channels)
    t = build_multiview_transform(aug, 3, size, channels, mean, std)
    torch.manual_seed(0)
    views = t(_img(channels, size))
    assert isinstance(views, list) and len(views) == 3
    sizes = [size] * 3
    if aug == "infomin_jigsaw":  # the last view is the jigsaw image, 255/224 of the side
        sizes[-1] = round(size * 255 / 224)
    for v, side in zip(views, sizes, strict=True):
        assert v.shape == (channels, side, side)
        assert v.dtype == torch.float32
    assert not torch.equal(views[0], views[1])
    assert not torch.equal(views[1], views[2])


def test_output_size_follows_image_size():
    t = build_multiview_transform("mocov2", 2, 24, 3, CIFAR_MEAN, CIFAR_STD)
    assert [tuple(v.shape) for v in t(_img(3, 40))] == [(3, 24, 24), (3, 24, 24)]


def test_unknown_augmentation_lists_valid():
    with pytest.raises(ValueError, match="npid, mocov2, mocov2_erasing, byol, infomin"):
        build_multiview_transform("simclr", 2, 32, 3, CIFAR_MEAN, CIFAR_STD)


@pytest.mark.parametrize(
    "sigma,size,k", [(0.1, 32, 3), (1.0, 32, 7), (2.0, 32, 13), (2.0, 224, 13), (2.0, 5, 9)]
)
def test_blur_kernel_follows_sigma(sigma, size, k):
    assert gaussian_kernel_size(sigma, size) == k  # 2*ceil(3σ)+1, radius below the side


def test_npid_recipe():
    (t,) = build_view_transforms("npid", 32, 3, CIFAR_MEAN, CIFAR_STD)
    ops = _ops(t)
    rrc = next(o for o in ops if isinstance(o, v2.RandomResizedCrop))
    assert rrc.scale == (0.2, 1.0) and tuple(rrc.size) == (32, 32)
    cj = next(o for o in ops if isinstance(o, v2.ColorJitter))
    assert cj.brightness == (0.6, 1.4) and cj.hue == (-0.4, 0.4)
    assert next(o for o in ops if isinstance(o, v2.RandomGrayscale)).p == 0.2
    norm = next(o for o in ops if isinstance(o, v2.Normalize))
    assert norm.mean == list(CIFAR_MEAN) and norm.std == list(CIFAR_STD)
    assert not any(isinstance(o, v2.GaussianBlur) for o in ops)


def test_mocov2_and_erasing_recipe():
    (t,) = build_view_transforms("mocov2", 32, 3, CIFAR_MEAN, CIFAR_STD)
    jitter = next(o for o in t.transforms if isinstance(o, v2.RandomApply))
    assert jitter.p == 0.8 and jitter.transforms[0].hue == (-0.1, 0.1)
    blur = [o for o in t.transforms if isinstance(o, v2.RandomApply)][1]
    assert blur.p == 0.5 and isinstance(blur.transforms[0], GaussianBlur)
    assert blur.transforms[0].sigma == (0.1, 2.0)
    assert not any(isinstance(o, v2.RandomErasing) for o in _ops(t))
    (te,) = build_view_transforms("mocov2_erasing", 32, 3, CIFAR_MEAN, CIFAR_STD)
    assert isinstance(te.transforms[-1], v2.RandomErasing) and te.transforms[-1].p == 1.0


def test_byol_views_are_asymmetric():
    t1, t2 = build_view_transforms("byol", 32, 3, CIFAR_MEAN, CIFAR_STD)
    assert isinstance(t1.transforms[4], GaussianBlur)  # p = 1.0: always applied
    assert not any(isinstance(o, v2.RandomSolarize) for o in t1.transforms)
    blur2 = t2.transforms[4]
    assert isinstance(blur2, v2.RandomApply) and blur2.p == 0.1
    sol = next(o for o in t2.transforms if isinstance(o, v2.RandomSolarize))
    assert sol.p == 0.2
    cj = t1.transforms[2].transforms[0]
    assert cj.saturation == (0.8, 1.2) and cj.hue == (-0.1, 0.1)
    mv = build_multiview_transform("byol", 4, 32, 3, CIFAR_MEAN, CIFAR_STD)
    assert len(mv.transforms) == 2 and len(mv(_img(3, 32))) == 4
    has_sol = [any(isinstance(o, v2.RandomSolarize) for o in t.transforms) for t in mv.transforms]
    assert has_sol == [False, True]  # views 0, 2 use the first pipeline; views 1, 3 the second


def test_infomin_recipe():
    (t,) = build_view_transforms("infomin", 32, 3, CIFAR_MEAN, CIFAR_STD)
    ra = next(o for o in t.transforms if isinstance(o, ReferenceRandAugment))
    assert (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob) == (2, 10, 0.5, 0.5)
    cj = next(o for o in _ops(t) if isinstance(o, v2.ColorJitter))
    assert cj.brightness == pytest.approx((0.2, 1.8)) and cj.hue == (-0.2, 0.2)


@pytest.mark.parametrize("aug", AUGMENTATIONS)
def test_grayscale_pipeline(aug):
    for t in build_view_transforms(aug, 28, 1, (0.286,), (0.353,)):
        ops = _ops(t)
        assert not any(isinstance(o, v2.RandomGrayscale) for o in ops)
        for cj in (o for o in ops if isinstance(o, v2.ColorJitter)):
            assert cj.saturation is None and cj.hue is None
            assert cj.brightness is not None and cj.contrast is not None


def test_mean_std_length_checked():
    with pytest.raises(ValueError, match="mean/std need 1 values"):
        build_multiview_transform("npid", 2, 28, 1, CIFAR_MEAN, CIFAR_STD)


def test_eval_transform_normalises_exactly():
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    out = build_eval_transform(32, CIFAR_MEAN, CIFAR_STD)(img)
    expected = torch.tensor(
        [(200 / 255 - m) / s for m, s in zip(CIFAR_MEAN, CIFAR_STD, strict=True)]
    )
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-5)
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-5)
    big = build_eval_transform(224, CIFAR_MEAN, CIFAR_STD, resize_to=256)(_img(3, 300))
    assert big.shape == (3, 224, 224)


def test_two_views_of_same_index_differ_through_dataset():
    from cld_lightning.data import MultiViewDataset, TensorImages

    src = TensorImages(torch.stack([_img(3, 32, s) for s in range(4)]), [0, 1, 2, 3])
    ds = MultiViewDataset(src, build_multiview_transform("npid", 2, 32, 3, CIFAR_MEAN, CIFAR_STD))
    views, target, index = ds[2]
    assert (target, index) == (2, 2)
    assert not torch.equal(views[0], views[1])


def test_dataset_transform_runs_single_threaded_and_restores():
    from cld_lightning.data import MultiViewDataset, TensorImages

    seen = []

    def spy(img):
        seen.append(torch.get_num_threads())
        return [img.float()]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ds = MultiViewDataset(TensorImages(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), [0]), spy)
        ds[0]
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
