"""The statistics of ``cld-report``, as pure functions of numbers (no scipy needed).

- :func:`mean_std`: mean ± sample std of the finite values.
- :func:`spearman`, :func:`kendall_tau`: rank correlations (ties: average ranks; τ-b).
- :func:`t_quantile`, :func:`t_interval`: Student's t quantile (exact for integer degrees of
  freedom, Abramowitz & Stegun 26.7.3-4) and the paired t interval of a mean difference.
- :func:`random_pick_regret`: the expected regret of picking one configuration at random.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from cld_lightning.report.records import Interval, Stat

LEVEL = 0.95  # the two-sided level of every interval cld-report prints


def mean_std(values: Sequence[float]) -> Stat:
    """Mean ± std of the finite values (std 0 for one value, NaN for none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Stat(math.nan, math.nan, 0)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return Stat(statistics.mean(vals), std, len(vals))


def _check_pair(x: Sequence[float], y: Sequence[float], what: str) -> None:
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{what} needs two equal-length sequences of >= 2, got {len(x)}, {len(y)}")


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):  # ties share their average rank
            ranks[order[t]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when a side is constant."""
    _check_pair(x, y, "spearman")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b: (concordant - discordant pairs) / sqrt((n0 - ties in x)(n0 - ties in y)),
    ``n0 = n(n-1)/2``; NaN when a side is constant."""
    _check_pair(x, y, "kendall_tau")
    concordant = discordant = tied_x = tied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            sx = (x[j] > x[i]) - (x[j] < x[i])
            sy = (y[j] > y[i]) - (y[j] < y[i])
            tied_x += sx == 0
            tied_y += sy == 0
            concordant += sx * sy > 0
            discordant += sx * sy < 0
    n0 = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (concordant - discordant) / denominator if denominator > 0 else math.nan


def _t_central(t: float, dof: int) -> float:
    """``P(|T| < t)`` for Student's t with an integer ``dof`` (A&S 26.7.3 odd, 26.7.4 even)."""
    theta = math.atan(t / math.sqrt(dof))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 0:  # sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ... up to cos^(ν-2)θ)
        term = total = 1.0
        for k in range(1, dof // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    if dof == 1:
        return 2.0 * theta / math.pi
    term = total = math.cos(theta)  # 2/π (θ + sinθ (cosθ + 2/3 cos³θ + ... up to cos^(ν-2)θ))
    for k in range(1, (dof - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return 2.0 / math.pi * (theta + s * total)


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` (a positive integer) degrees of freedom,
    e.g. ``t_quantile(0.975, 2) = 4.303`` (bisection on the exact distribution function)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if int(dof) != dof or dof < 1:
        raise ValueError(f"t_quantile: dof must be a positive integer, got {dof}")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    central = 2.0 * p - 1.0  # P(|T| < t) = 2p - 1 for the upper quantile t
    low, high = 0.0, 1.0
    while _t_central(high, int(dof)) < central:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _t_central(mid, int(dof)) < central else (low, mid)
        if high - low <= 1e-12 * high:
            break
    return 0.5 * (low + high)


def t_interval(differences: Sequence[float], level: float = LEVEL) -> Interval | None:
    """The paired t interval of the mean of ``differences`` (one per seed pair):
    ``mean ± t_{(1+level)/2, n-1} · std / sqrt(n)``; ``None`` with fewer than 2 finite values."""
    stat = mean_std(differences)
    if stat.n < 2:
        return None
    half = t_quantile(0.5 + level / 2.0, stat.n - 1) * stat.std / math.sqrt(stat.n)
    return Interval(level=level, low=stat.mean - half, high=stat.mean + half, dof=stat.n - 1)


def random_pick_regret(values: Sequence[float], best: float | None = None) -> float:
    """Expected regret of a uniformly random pick among configurations with these target
    ``values``: ``best - mean(values)`` (``best`` defaults to ``max(values)``)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan
    return (max(vals) if best is None else best) - statistics.mean(vals)
