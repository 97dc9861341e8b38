"""BYOL's normalised regression loss (Grill et al. 2020), pure functions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def byol_regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """``‖p̄ - z̄‖² = 2 - 2·cos(p, z)`` averaged over the batch (``z``: the target's projection,
    to be passed detached by the caller)."""
    if p.shape != z.shape:
        raise ValueError(
            f"p and z must have the same shape, got {tuple(p.shape)} and {tuple(z.shape)}"
        )
    return (2.0 - 2.0 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)).mean()


def symmetric_byol_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """BYOL's symmetrised loss ``L + L̃``: online prediction of view 1 regresses the target
    projection of view 2 and vice versa (summed, as in the BYOL paper)."""
    return byol_regression_loss(p1, z2) + byol_regression_loss(p2, z1)
