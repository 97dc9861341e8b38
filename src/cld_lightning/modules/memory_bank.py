"""NPID's memory bank: one L2-normalised embedding per training instance (a persistent buffer)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.modules.distributed import gather_no_grad


class MemoryBank(nn.Module):
    """``[N, D]`` bank, init uniform(-s, s) with ``s = 1/sqrt(D/3)`` as the NPID reference.

    Rows are updated *after* the optimiser step with ``m ← normalize(μ·m + (1-μ)·z)``
    (``μ = momentum``, 0.5 in NPID). ``gather_distributed=True`` gathers indices and embeddings from
    all processes first, so every rank holds the same bank.
    """

    def __init__(
        self, num_samples: int, dim: int, momentum: float = 0.5, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"memory bank needs num_samples >= 1, got {num_samples}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory bank momentum must be in [0, 1), got {momentum}")
        self.num_samples = num_samples
        self.dim = dim
        self.momentum = momentum
        self.gather_distributed = gather_distributed
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer(
            "bank", torch.rand(num_samples, dim).mul_(2 * stdv).add_(-stdv), persistent=True
        )

    def forward(self, z: Tensor) -> Tensor:
        """Similarities ``z · bankᵀ`` (``[B, N]``), bank detached."""
        return z @ self.bank.t().to(z.dtype)

    @torch.no_grad()
    def update(self, indices: Tensor, z: Tensor) -> None:
        """Momentum update of rows ``indices`` with embeddings ``z`` (detached)."""
        z = z.detach().float()
        if self.gather_distributed:
            indices, z = gather_no_grad(indices), gather_no_grad(z)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_samples):
            raise IndexError(
                f"memory bank index out of range [0, {self.num_samples}): "
                f"min {int(indices.min())}, max {int(indices.max())}"
            )
        rows = self.bank.index_select(0, indices)
        rows = F.normalize(self.momentum * rows + (1.0 - self.momentum) * z, dim=1)
        self.bank.index_copy_(0, indices, rows)
