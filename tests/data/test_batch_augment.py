"""``augment_on=device``: the batched views follow the CPU recipes' distributions.

Each statistic is measured on many sampled views from both pipelines (the per-sample torchvision
pipeline of :mod:`cld_lightning.data.transforms` and the batched one); rates are compared within
0.05 (n = 2000 per side: the standard error of a difference of two rates near 0.5 is 0.016, so
0.05 is about 3 SE), continuous parameters by their mean and quartiles. The InfoMin tests state
their own bounds (5 SE).
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2

from cld_lightning.data import randaugment
from cld_lightning.data.batch_augment import (
    BatchMultiViewAugment,
    color_jitter,
    erasing_mask,
    gaussian_blur,
    sample_crop_boxes,
    view_recipes,
)
from cld_lightning.data.datamodule import SSLDataModule, batch_seed
from cld_lightning.data.gpu_decode import DecodedMultiViewAugment
from cld_lightning.data.transforms import (
    build_multiview_transform,
    build_view_transforms,
    jigsaw_view_transform,
)
from tests.helpers import assert_jigsaw_needs_dali

N = 2000


def _cpu_views(aug: str, img: torch.Tensor, n: int, **kw) -> torch.Tensor:
    c = img.shape[0]
    t = build_view_transforms(aug, img.shape[-1], c, [0.0] * c, [1.0] * c, **kw)[0]
    torch.manual_seed(0)
    return torch.stack([t(img) for _ in range(n)])


def _batch_views(aug: str, img: torch.Tensor, n: int, crop_min_scale: float = 0.2) -> torch.Tensor:
    c = img.shape[0]
    a = BatchMultiViewAugment(aug, 1, img.shape[-1], c, [0.0] * c, [1.0] * c, crop_min_scale)
    return a(img.expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))[0]


def test_crop_boxes_follow_random_resized_crop() -> None:
    rrc = v2.RandomResizedCrop(28, scale=(0.2, 1.0))
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    torch.manual_seed(0)
    cpu = torch.tensor(
        [
            [p["height"] * p["width"], p["width"] / p["height"]]
            for p in (rrc.make_params([img]) for _ in range(N))
        ],
        dtype=torch.float64,
    )
    boxes = sample_crop_boxes(
        N, 28, 28, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(1)
    )
    top, left, h, w = boxes.double().unbind(1)
    ours = torch.stack([h * w, w / h], dim=1)
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    )
    for col, tol in ((0, 0.03), (1, 0.03)):
        a, b = cpu[:, col], ours[:, col]
        scale = a.mean()
        assert abs(a.mean() - b.mean()) / scale < tol
        for q in (0.25, 0.5, 0.75):
            assert abs(a.quantile(q) - b.quantile(q)) / scale < 0.06
    # tries that do not fit are redrawn, which lowers the mean area below 0.6: both agree on it
    assert 0.5 < ours[:, 0].mean() / 784 < 0.6


def test_flip_rate_matches() -> None:
    img = torch.zeros(1, 28, 28, dtype=torch.uint8)
    img[:, :, :10] = 255  # bright left stripe: a flip moves it right
    kw = {"crop_min_scale": 1.0}  # full-image crops (the aspect draw falls back to the image)
    cpu = _cpu_views("grayscale", img, N, **kw)
    ours = _batch_views("grayscale", img, N, 1.0)

    def flipped(v: torch.Tensor) -> torch.Tensor:
        return (v[:, 0, :, 20:].mean(dim=(1, 2)) > v[:, 0, :, :8].mean(dim=(1, 2))).double()

    assert abs(flipped(cpu).mean() - 0.5) < 0.05
    assert abs(flipped(cpu).mean() - flipped(ours).mean()) < 0.05


@pytest.mark.parametrize("aug", ["grayscale", "mocov2"])
def test_brightness_jitter_distribution_and_rate_match(aug: str) -> None:
    img = torch.full(
        (1, 28, 28), 100, dtype=torch.uint8
    )  # flat: crop/flip/blur/contrast are no-ops
    kw = {"crop_min_scale": 1.0}
    cpu = _cpu_views(aug, img, N, **kw)[:, 0].mean(dim=(1, 2)) / (100 / 255)
    ours = _batch_views(aug, img, N, 1.0)[:, 0].mean(dim=(1, 2)) / (100 / 255)
    untouched = lambda r: ((r - 1).abs() < 0.01).double().mean()  # noqa: E731
    assert abs(untouched(cpu) - 0.2) < 0.05  # RandomApply(ColorJitter, p=0.8)
    assert abs(untouched(cpu) - untouched(ours)) < 0.05
    jit_cpu, jit_ours = cpu[(cpu - 1).abs() >= 0.01], ours[(ours - 1).abs() >= 0.01]
    assert abs(jit_cpu.min() - 0.6) < 0.02 and abs(jit_ours.min() - 0.6) < 0.02
    assert abs(jit_cpu.max() - 1.4) < 0.02 and abs(jit_ours.max() - 1.4) < 0.02
    assert abs(jit_cpu.mean() - jit_ours.mean()) < 0.03


def test_jitter_factors_are_uniform_on_the_recipe_ranges() -> None:
    x = torch.rand(N, 3, 4, 4)
    apply = torch.rand(N, generator=torch.Generator().manual_seed(3)) < 0.8
    _, f = color_jitter(x, (0.4, 0.4, 0.4, 0.1), apply, torch.Generator().manual_seed(2))
    on = f[apply]
    for col, (lo, hi) in enumerate(((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))):
        assert on[:, col].min() >= lo and on[:, col].max() <= hi
        assert abs(on[:, col].mean() - (lo + hi) / 2) < 0.02 * (hi - lo) * 5
        assert abs(on[:, col].std() - (hi - lo) / math.sqrt(12)) < 0.05 * (hi - lo)
    assert torch.equal(f[~apply], torch.tensor([1.0, 1.0, 1.0, 0.0]).expand((~apply).sum(), 4))


def test_grayscale_and_blur_rates_match_on_colour_images() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[0] = (torch.rand(32, 32, generator=g) * 255).to(torch.uint8)  # red noise, green/blue flat
    img[1] = 40
    kw = {"crop_min_scale": 1.0}
    cpu, ours = _cpu_views("mocov2", img, N, **kw), _batch_views("mocov2", img, N, 1.0)

    def gray_rate(v: torch.Tensor) -> torch.Tensor:
        return ((v[:, 0] - v[:, 1]).abs().amax(dim=(1, 2)) < 0.02).double().mean()

    assert abs(gray_rate(cpu) - 0.2) < 0.05 and abs(gray_rate(cpu) - gray_rate(ours)) < 0.05

    def smooth_rate(v: torch.Tensor) -> torch.Tensor:  # high-frequency energy of the red channel
        r = v[:, 0]
        hf = (r[:, :, 1:] - r[:, :, :-1]).abs().mean(dim=(1, 2)) / r.std(dim=(1, 2)).clamp_min(1e-6)
        return (hf < 0.5).double().mean()

    # blur p 0.5 in both; σ ~ U(0.1, 2): σ < 0.5 barely smooths, so the rate is below 0.5
    assert 0.25 < smooth_rate(ours) < 0.5
    assert abs(smooth_rate(cpu) - smooth_rate(ours)) < 0.06


def test_blur_is_normalised_identity_when_off_and_smooths_when_on() -> None:
    x = torch.rand(4, 1, 16, 16)
    on = torch.tensor([True, False, True, False])
    y = gaussian_blur(x, torch.tensor([2.0, 2.0, 0.1, 0.1]), on)
    assert torch.equal(y[1], x[1]) and torch.equal(y[3], x[3])
    assert torch.allclose(y[2], x[2], atol=1e-4)  # σ 0.1: a delta kernel
    assert y[0].std() < 0.5 * x[0].std()
    flat = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.5]), torch.tensor([True])), flat)


def test_erasing_area_fraction_matches_torchvision() -> None:
    masks = erasing_mask(N, 32, 32, torch.Generator().manual_seed(0)).double()
    ours = masks.mean(dim=(1, 2, 3))
    erase = v2.RandomErasing(p=1.0)
    torch.manual_seed(0)
    x = torch.ones(1, 32, 32)
    cpu = torch.stack([(erase(x) == 0).double().mean() for _ in range(N)])
    assert abs(cpu.mean() - ours.mean()) < 0.01
    assert abs(cpu.median() - ours.median()) < 0.02


def test_views_are_seeded_per_batch_and_differ_between_views() -> None:
    a = BatchMultiViewAugment("byol", 2, 32, 3, [0.5] * 3, [0.25] * 3)
    x = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    v1 = a(x, torch.Generator().manual_seed(5))
    v2_ = a(x, torch.Generator().manual_seed(5))
    v3 = a(x, torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(v1, v2_, strict=True))
    assert not torch.equal(v1[0], v3[0]) and not torch.equal(v1[0], v1[1])
    idx = torch.arange(8)
    assert batch_seed(0, 1, idx, 0) == batch_seed(0, 1, idx.clone(), 0)
    assert (
        len({batch_seed(0, 1, idx, 0), batch_seed(0, 2, idx, 0), batch_seed(0, 1, idx + 8, 0)}) == 3
    )
    with pytest.raises(ValueError, match="uint8"):
        a(x.float(), torch.Generator())


def test_bad_options_name_the_key(tmp_path) -> None:
    with pytest.raises(ValueError, match="data.augment_on"):
        SSLDataModule(dataset="fashion_mnist", root=tmp_path, augment_on="tpu")
    with pytest.raises(ValueError, match="data.augmentation='rotate'.*no batched version"):
        view_recipes("rotate", 3)
    with pytest.raises(ValueError, match="data.num_views must be >= 2.*infomin_jigsaw"):
        BatchMultiViewAugment("infomin_jigsaw", 1, 16, 3, [0.5] * 3, [0.25] * 3)
    with pytest.raises(ValueError, match="data.augmentation='infomin_jigsaw'.*data.decoder=dali"):
        DecodedMultiViewAugment("infomin_jigsaw", 2, 8, 3, [0.5] * 3, [0.25] * 3).from_crops(
            [torch.rand(2, 3, 8, 8)] * 2, torch.Generator()
        )
    assert_jigsaw_needs_dali(tmp_path)
    SSLDataModule(  # InfoMin has a batched version now
        dataset="fashion_mnist", root=tmp_path, augmentation="infomin", augment_on="device"
    )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="augment_on=gpu needs a CUDA device"):
            SSLDataModule(dataset="fashion_mnist", root=tmp_path, augment_on="gpu")


def _infomin_image() -> torch.Tensor:
    """Red noise, a green ramp, flat blue: colour ops, RandAugment and grayscale all show."""
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(3, 24, 24, dtype=torch.uint8)
    img[0] = (torch.rand(24, 24, generator=g) * 255).to(torch.uint8)
    img[1] = torch.linspace(20, 220, 24).to(torch.uint8)[None, :].expand(24, 24)
    img[2] = 90
    return img


def test_infomin_statistics_and_randaugment_rates_match(monkeypatch) -> None:
    """CPU ``infomin`` views (RandAugment calls counted) vs batched views (RandAugment draws
    recorded), N = 2000 each. Bounds: 5 SE. Grayscale rate p 0.2: difference of two rates, SE
    0.0126 -> 0.063; ops applied per view (0/1/2 with p 0.25/0.5/0.25): each side within 5 SE of
    the exact value (<= 0.056); each op's applied rate (1/15): 5 SE of a difference (0.04)."""
    img = _infomin_image()
    calls: list[list[str]] = []
    apply = randaugment.ReferenceRandAugment.apply

    def spy(self, name: str, im: torch.Tensor, level: float) -> torch.Tensor:
        calls[-1].append(name)
        return apply(self, name, im, level)

    monkeypatch.setattr(randaugment.ReferenceRandAugment, "apply", spy)
    t = build_view_transforms("infomin", 24, 3, [0.0] * 3, [1.0] * 3)[0]
    torch.manual_seed(0)
    cpu = []
    for _ in range(N):
        calls.append([])
        cpu.append(t(img))
    cpu_v = torch.stack(cpu)
    a = BatchMultiViewAugment("infomin", 1, 24, 3, [0.0] * 3, [1.0] * 3)
    draws = []
    sample = a.randaugment.sample
    monkeypatch.setattr(
        a.randaugment, "sample", lambda n, g: draws.append(sample(n, g)) or draws[-1]
    )
    ours = a(img.expand(N, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))[0]
    d = draws[0]
    n_cpu = torch.bincount(torch.tensor([len(c) for c in calls]), minlength=3).double() / N
    n_ours = torch.bincount(d.apply.sum(dim=1), minlength=3).double() / N
    for got in (n_cpu, n_ours):
        sd = torch.sqrt(torch.tensor([0.25 * 0.75, 0.25, 0.25 * 0.75]) / N)
        assert ((got - torch.tensor([0.25, 0.5, 0.25])).abs() < 5 * sd).all()
    names = randaugment.RAND_OPS
    per_op_cpu = torch.tensor([sum(c.count(o) for c in calls) for o in names]) / N
    per_op_ours = torch.bincount(d.op[d.apply], minlength=len(names)) / N
    assert ((per_op_cpu - per_op_ours).abs() < 0.04).all()

    def gray_rate(v: torch.Tensor) -> torch.Tensor:
        return ((v[:, 0] - v[:, 1]).abs().amax(dim=(1, 2)) < 1e-6).double().mean()

    assert abs(gray_rate(cpu_v) - 0.2) < 0.045 and abs(gray_rate(cpu_v) - gray_rate(ours)) < 0.063
    for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3))):
        p, q = stat(cpu_v), stat(ours)
        assert abs(p.mean() - q.mean()) < 0.015
        for quantile in (0.25, 0.5, 0.75):
            assert abs(p.quantile(quantile) - q.quantile(quantile)) < 0.03


def test_infomin_jigsaw_views_sizes_crop_scale_and_resume() -> None:
    """Views 0..n-2 are InfoMin crops at ``image_size``, the last the jigsaw image at
    ``round(255/224·size)`` cropped with scale (0.6, 1): on a horizontal ramp its value span
    (~ crop width) agrees with the CPU jigsaw transform (mean within 0.02, about 5 SE at N=1000)."""
    x = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    a = BatchMultiViewAugment("infomin_jigsaw", 3, 32, 3, [0.5] * 3, [0.25] * 3)
    cpu = build_multiview_transform("infomin_jigsaw", 3, 32, 3, [0.5] * 3, [0.25] * 3)(x[0])
    v1 = a(x, torch.Generator().manual_seed(5))
    assert [tuple(v.shape[1:]) for v in v1] == [tuple(v.shape) for v in cpu]
    assert [v.shape[-1] for v in v1] == [32, 32, 36]
    assert all(torch.isfinite(v).all() for v in v1) and not torch.equal(v1[0], v1[1])
    v2_ = a(x, torch.Generator().manual_seed(5))
    v3 = a(x, torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(v1, v2_, strict=True))
    assert all(not torch.equal(p, q) for p, q in zip(v1, v3, strict=True))
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8).view(1, 1, 32).expand(3, 32, 32)
    n = 1000
    t = jigsaw_view_transform(32, [0.0] * 3, [1.0] * 3)
    torch.manual_seed(0)
    cpu_j = torch.stack([t(ramp) for _ in range(n)])
    b = BatchMultiViewAugment("infomin_jigsaw", 2, 32, 3, [0.0] * 3, [1.0] * 3)
    ours_j = b(ramp.expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))[1]

    def span(v: torch.Tensor) -> torch.Tensor:
        row = v[:, 0, 16]
        return row.amax(dim=1) - row.amin(dim=1)

    assert span(ours_j).min() > 0.6 and span(cpu_j).min() > 0.6  # width >= sqrt(0.6·3/4)
    assert abs(span(cpu_j).mean() - span(ours_j).mean()) < 0.02


def test_infomin_on_images_of_different_sizes_and_grayscale() -> None:
    """``DecodedMultiViewAugment`` (uncached ImageFolder, ``decoder=pil``): InfoMin crops and the
    jigsaw view per image; a 1-channel batch runs InfoMin without its colour ops."""
    g = torch.Generator().manual_seed(2)
    images = [
        (torch.rand(3, 20 + 3 * i, 30 - i, generator=g) * 255).to(torch.uint8) for i in range(5)
    ]
    a = DecodedMultiViewAugment("infomin_jigsaw", 3, 16, 3, [0.5] * 3, [0.25] * 3)
    views = a(images, torch.Generator().manual_seed(0))
    again = a(images, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(5, 3, 16, 16), (5, 3, 16, 16), (5, 3, 18, 18)]
    assert all(torch.isfinite(v).all() for v in views)
    assert all(torch.equal(p, q) for p, q in zip(views, again, strict=True))
    gray = BatchMultiViewAugment("infomin", 2, 16, 1, [0.5], [0.25])
    assert gray.recipes[0].jitter == (0.8, 0.8, 0.0, 0.0) and gray.recipes[0].grayscale_p == 0.0
    out = gray(torch.stack([im[:1, :16, :16] for im in images]), torch.Generator().manual_seed(0))
    assert all(v.shape == (5, 1, 16, 16) and torch.isfinite(v).all() for v in out)
