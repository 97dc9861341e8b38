"""Batched InfoMin RandAugment (:mod:`cld_lightning.data.batch_randaugment`) against the per-image
reference (:class:`~cld_lightning.data.randaugment.ReferenceRandAugment`).

Op values: every batched op at a fixed level / sign / resampling equals ``ReferenceRandAugment.apply``
on each uint8 image. Tolerance: no pixel off by more than one uint8 level and at most 1 % of the
pixels off by one (float sums rounded in another order can move a value across a truncation
boundary); the affine ops may in addition differ at the border (a sample point exactly on the
image edge: inside / fill), bounded at 2 % of the pixels. (Measured: 0 differing pixels.)

Draws: rates are checked within 5 standard errors (binomial ``sqrt(p(1-p)/n)``), the op counts
also by a chi-square statistic below its 1e-6 tail (54.6 for 14 degrees of freedom).
"""

from __future__ import annotations

import math

import pytest
import torch

from cld_lightning.data.batch_randaugment import AFFINE_OPS, BatchRandAugment, RandAugmentDraws
from cld_lightning.data.randaugment import RAND_OPS, ReferenceRandAugment

FILL = (125.0, 123.0, 114.0)


def _images(c: int, n: int = 12, side: int = 20) -> torch.Tensor:
    """Noise images plus a flat one and a low-contrast one (AutoContrast / Equalize edge cases)."""
    x = (torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(c)) * 256).to(
        torch.uint8
    )
    x[0] = 100
    x[1] = x[1] // 4 + 60
    return x


def _reference_with_draws(
    ref: ReferenceRandAugment, name: str, img: torch.Tensor, level: float, seed: int
) -> tuple[torch.Tensor, bool, bool]:
    """``ref.apply`` with the global RNG seeded: the op draws bicubic then the sign from it, so
    the same seed replayed first gives the choices it will make. Returns (out, negate, bicubic)."""
    torch.manual_seed(seed)
    bicubic = bool(torch.rand(()) < 0.5)
    negate = float(torch.rand(())) > 0.5
    torch.manual_seed(seed)
    return ref.apply(name, img, level), negate, bicubic


@pytest.mark.parametrize("c", [3, 1])
@pytest.mark.parametrize("name", RAND_OPS)
def test_each_op_matches_the_reference(name: str, c: int) -> None:
    imgs = _images(c)
    n = len(imgs)
    levels = torch.rand(n, generator=torch.Generator().manual_seed(7)).double() * 10
    levels[:4] = torch.tensor([10.0, 0.0, 5.0, 2.5], dtype=torch.float64)
    ref = ReferenceRandAugment(fill=FILL[:c])
    outs, negate, bicubic = [], [], []
    for i in range(n):
        out, neg, cub = _reference_with_draws(ref, name, imgs[i], float(levels[i]), 100 + i)
        outs.append(out)
        negate.append(neg)
        bicubic.append(cub)
    assert any(bicubic) and not all(bicubic) and any(negate) and not all(negate)
    cpu = torch.stack(outs).float()
    ours = BatchRandAugment(fill=FILL[:c]).apply_op(
        name, imgs.float(), levels, torch.tensor(negate), torch.tensor(bicubic)
    )
    assert ours.shape == cpu.shape and torch.equal(ours, ours.round())
    diff = (ours - cpu).abs()
    if name in AFFINE_OPS:
        assert (diff > 1).double().mean() <= 0.02 and (diff > 0).double().mean() <= 0.03
    else:
        assert diff.max() <= 1 and (diff > 0).double().mean() <= 0.01


def test_call_applies_the_drawn_ops_in_order() -> None:
    """``__call__`` with given draws = :meth:`apply_op` image by image, op after op (the grouping
    by op inside a step changes nothing)."""
    ra = BatchRandAugment(fill=FILL)
    x = _images(3, 40).float() / 255.0
    draws = ra.sample(40, torch.Generator().manual_seed(3))
    got = ra(x, torch.Generator(), draws)
    for i in range(40):
        y = (x[i : i + 1] * 255.0).round()
        for k in range(ra.num_ops):
            if draws.apply[i, k]:
                name = ra.ops[int(draws.op[i, k])]
                args = (draws.level[i : i + 1, k], draws.negate[i : i + 1, k])
                y = ra.apply_op(name, y, *args, draws.bicubic[i : i + 1, k])
        torch.testing.assert_close(got[i : i + 1], y / 255.0, atol=0, rtol=0)
    # no op applied: the input rounded to uint8 levels
    off = RandAugmentDraws(
        draws.op, torch.zeros_like(draws.apply), draws.level, draws.negate, draws.bicubic
    )
    assert torch.equal(ra(x, torch.Generator(), off), (x * 255).round() / 255)


def test_draws_follow_the_reference_distributions() -> None:
    n = 20000
    d = BatchRandAugment().sample(n, torch.Generator().manual_seed(0))
    m = n * 2  # two ops per sample
    assert d.op.shape == (n, 2) and d.op.min() == 0 and d.op.max() == len(RAND_OPS) - 1
    counts = torch.bincount(d.op.flatten(), minlength=15).double()
    expected = m / 15
    sd = math.sqrt(m * (1 / 15) * (14 / 15))
    assert ((counts - expected).abs() < 5 * sd).all()  # per op: 5 binomial SE (~250)
    assert float(((counts - expected) ** 2 / expected).sum()) < 54.6  # chi2(14) 1e-6 tail
    half = 5 * math.sqrt(0.25 / m)  # 5 SE of a rate near 0.5 over m draws (0.0125)
    for flags in (d.apply, d.negate, d.bicubic):
        assert abs(flags.double().mean() - 0.5) < half
    lv = d.level.flatten()
    assert lv.min() >= 0 and lv.max() == 10.0
    # N(10, 0.5) clipped at 10: half the mass at 10, mean 10 - 0.5/sqrt(2 pi), std 0.5 *
    # sqrt(1/2 - 1/(2 pi)); tolerances 5 SE of the mean (0.0073) and ~7 SE of the std
    assert abs((lv == 10.0).double().mean() - 0.5) < half
    assert abs(lv.mean() - (10 - 0.5 / math.sqrt(2 * math.pi))) < 5 * 0.2919 / math.sqrt(m)
    assert abs(lv.std() - 0.5 * math.sqrt(0.5 - 1 / (2 * math.pi))) < 0.01
    same = BatchRandAugment().sample(n, torch.Generator().manual_seed(0))
    other = BatchRandAugment().sample(n, torch.Generator().manual_seed(1))
    assert torch.equal(same.op, d.op) and torch.equal(same.level, d.level)
    assert not torch.equal(other.op, d.op)


def test_whole_randaugment_matches_the_reference_in_distribution() -> None:
    """The full chain (2 ops, p 0.5, magnitudes) on one image, N times per side: the rate of
    untouched outputs and the quartiles of the mean absolute change agree. Untouched rate: 5 SE of
    a difference of two rates (n = 1500 each, SE <= 0.018): 0.09."""
    n = 1500
    img = _images(3, 3, 16)[2]
    ref = ReferenceRandAugment(fill=FILL)
    torch.manual_seed(0)
    cpu = torch.stack([ref(img) for _ in range(n)]).float() / 255.0
    ours = BatchRandAugment(fill=FILL)(
        (img.float() / 255.0).expand(n, -1, -1, -1), torch.Generator().manual_seed(0)
    )
    x = img.float() / 255.0

    def change(v: torch.Tensor) -> torch.Tensor:
        return (v - x).abs().mean(dim=(1, 2, 3))

    a, b = change(cpu), change(ours)
    untouched_a, untouched_b = (a == 0).double().mean(), (b == 0).double().mean()
    assert 0.25 <= untouched_a < 0.45  # P(no op applied) = 0.25, plus ops that are no-ops here
    assert abs(untouched_a - untouched_b) < 0.09
    for q in (0.5, 0.75, 0.9):
        assert abs(a.quantile(q) - b.quantile(q)) < 0.03


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty subset"):
        BatchRandAugment(ops=("Blur",))
    with pytest.raises(ValueError, match="num_ops >= 0"):
        BatchRandAugment(prob=1.5)
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        BatchRandAugment(ops=("Invert",)).apply_op(
            "Blur", torch.zeros(1, 1, 4, 4), torch.ones(1), torch.zeros(1, dtype=torch.bool),
            torch.zeros(1, dtype=torch.bool),
        )  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_matches_cpu() -> None:
    """Same draws on CUDA and on the CPU: at most 1 % of values differ (float order, grid_sample
    kernels), none by more than 2 levels outside 1 % of pixels."""
    ra = BatchRandAugment(fill=FILL)
    x = _images(3, 64, 32).float() / 255.0
    draws = ra.sample(64, torch.Generator().manual_seed(5))
    cpu = ra(x, torch.Generator(), draws)
    gpu = ra(x.cuda(), torch.Generator(), draws).cpu()
    diff = (gpu - cpu).abs() * 255
    assert (diff > 0.5).double().mean() <= 0.01 and (diff > 2.5).double().mean() <= 0.01
