"""Class counts of long-tailed sets: the exponential profile, the subset's indices, and the test
whether a training set is long-tailed.

The profile is the one of the common CIFAR-LT code (Cao et al., LDAM-DRW)::

    n_c = int(n_max * (1 / rho) ** (c / (C - 1)))      # int() truncates, i.e. floor

for class ``c = 0 .. C-1`` in label order, ``n_max`` the largest class in the source and ``rho`` the
imbalance ratio. We clamp ``n_c`` to at least 1 image (a class with none would vanish from the kNN
memory) and to the images the class has. For CIFAR-10 with ``rho = 100`` this gives
5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# long-tailed: the largest class has more than this many times the images of the smallest
# (CIFAR-LT uses ρ >= 10; a mildly unbalanced set such as ImageNet, ρ ≈ 1.8, is not long-tailed)
LONG_TAIL_MIN_RATIO = 3


def check_imbalance_ratio(imbalance_ratio: float) -> float:
    """Validate ``data.imbalance_ratio`` (>= 1)."""
    try:
        rho = float(imbalance_ratio)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"data.imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}"
        ) from e
    if not np.isfinite(rho) or rho < 1:
        raise ValueError(
            f"data.imbalance_ratio must be >= 1 (n_max / n_min, e.g. 10, 50, 100), got {rho}"
        )
    return rho


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class counts ``int(n_max * (1/rho) ** (c/(C-1)))``, at least 1."""
    rho = check_imbalance_ratio(imbalance_ratio)
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"need num_classes >= 1 and n_max >= 1, got {num_classes}, {n_max}")
    if num_classes == 1:
        return [int(n_max)]
    return [
        max(1, int(n_max * (1.0 / rho) ** (c / (num_classes - 1.0)))) for c in range(num_classes)
    ]


def class_counts(targets: Tensor | Sequence[int], num_classes: int) -> Tensor:
    """Images per class (labels < 0, i.e. unknown, are ignored)."""
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    t = t[t >= 0]
    return torch.bincount(t, minlength=num_classes)[:num_classes]


def long_tail_indices(
    targets: Tensor | Sequence[int],
    imbalance_ratio: float,
    seed: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    """Indices (sorted) of a long-tailed subset; which images of a class are kept depends on ``seed``."""
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if (t < 0).any():
        raise ValueError(
            "data.imbalance_ratio needs a fully labelled pretraining set, but some labels are -1"
        )
    c_total = int(num_classes if num_classes is not None else int(t.max()) + 1)
    counts = class_counts(t, c_total)
    wanted = long_tail_counts(int(counts.max()), c_total, imbalance_ratio)
    gen = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    t_np = t.numpy()
    for c in range(c_total):
        idx = np.flatnonzero(t_np == c)
        gen.shuffle(idx)
        keep.append(idx[: wanted[c]])
    return torch.from_numpy(np.sort(np.concatenate(keep))).long()


def is_long_tailed(
    train_class_counts: Tensor | Sequence[int], min_ratio: float = LONG_TAIL_MIN_RATIO
) -> bool:
    """True when ``max(n_c) > min_ratio · max(1, min(n_c))``: report many/medium/few-shot
    accuracy for this training set (online kNN; ``cld-eval`` with ``long_tail=auto``)."""
    counts = torch.as_tensor(train_class_counts)
    if counts.numel() == 0:
        return False
    return bool(counts.max() > min_ratio * counts.min().clamp_min(1))
