"""cld-report's statistics against hand-computed values: Student's t quantiles (no scipy), the
paired t interval, Kendall's τ-b, and a random pick's expected regret."""

from __future__ import annotations

import math
import random

import pytest

from cld_lightning.report.stats import (
    kendall_tau,
    mean_std,
    random_pick_regret,
    spearman,
    t_interval,
    t_quantile,
)


@pytest.mark.parametrize(
    ("p", "dof", "expected"),
    [  # printed t tables (two-sided 95 % and 99 %)
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.975, 3, 3.182),
        (0.975, 4, 2.776),
        (0.975, 9, 2.262),
        (0.975, 30, 2.042),
        (0.995, 5, 4.032),
        (0.95, 10, 1.812),
    ],
)
def test_t_quantile_matches_the_tables(p: float, dof: int, expected: float) -> None:
    assert t_quantile(p, dof) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(1.0 - p, dof) == pytest.approx(-expected, abs=5e-4)  # symmetric


def test_t_quantile_closed_forms_and_limits() -> None:
    # dof 1 is Cauchy: tan(π (p - 1/2)); dof 2: t = sqrt(2 A² / (1 - A²)) with A = 2p - 1
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)
    assert t_quantile(0.975, 2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), rel=1e-10)
    assert t_quantile(0.975, 2000) == pytest.approx(1.96, abs=2e-3)  # towards the normal's 1.960
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)
    for bad in ((1.0, 3), (0.0, 3), (0.9, 0), (0.9, 2.5)):
        with pytest.raises(ValueError, match="t_quantile"):
            t_quantile(*bad)


def test_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 5, 8, 13, 50):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(p, dof) == pytest.approx(stats.t.ppf(p, dof), rel=1e-8)


def test_paired_interval_by_hand() -> None:
    """Differences 1, 2, 3: mean 2, std 1, n 3 -> 2 ± 4.303 / sqrt(3) = [-0.484, 4.484] (holds
    0: within noise); differences 2, 3, 4 -> [0.516, 5.484] (does not)."""
    ci = t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert (ci.low, ci.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert ci.dof == 2 and ci.level == 0.95 and ci.within_noise
    ci = t_interval([2.0, 3.0, 4.0])
    assert ci.low == pytest.approx(3 - half) and not ci.within_noise
    assert t_interval([5.0]) is None  # one seed pair: no interval
    assert t_interval([5.0, math.nan]) is None  # a NaN pair does not count
    ci = t_interval([1.0, 3.0], level=0.9)  # mean 2, std sqrt(2), t_{0.95,1} = 6.314
    assert ci.high == pytest.approx(2 + 6.313752 * math.sqrt(2) / math.sqrt(2), rel=1e-6)


def test_kendall_tau_by_hand() -> None:
    # x = 1..4, y = 1 3 2 4: 5 concordant pairs, 1 discordant ((2,3)): τ = 4/6; Spearman 0.8
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: x = 1 1 2 3, y = 1 2 3 3: 4 concordant, 0 discordant, one tie on each side:
    # τ-b = 4 / sqrt((6 - 1)(6 - 1)) = 0.8
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="kendall_tau"):
        kendall_tau([1], [1])


def test_kendall_tau_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    for _ in range(20):
        x = [rng.choice([1.0, 2.0, 3.0, 4.5]) for _ in range(10)]
        y = [rng.choice([0.0, 1.0, 2.0]) + (xi if rng.random() < 0.6 else 0) for xi in x]
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_random_pick_regret_by_hand() -> None:
    # configurations at 71, 76, 73: a random pick's expected value 220/3, regret 76 - 220/3
    assert random_pick_regret([71.0, 76.0, 73.0]) == pytest.approx(76 - 220 / 3)
    # against a best outside the set (a score that saw only some configurations)
    assert random_pick_regret([70.0, 72.0], best=80.0) == pytest.approx(9.0)
    assert math.isnan(random_pick_regret([]))


def test_mean_std_skips_non_finite() -> None:
    s = mean_std([1.0, 3.0, math.nan])
    assert (s.mean, s.std, s.n) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert mean_std([]).n == 0 and not mean_std([]).known
