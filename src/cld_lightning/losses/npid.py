"""NPID instance-discrimination losses against a memory bank (Wu et al. 2018), pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cld_lightning.modules.precision import at_least_fp32


def npid_logits(z: Tensor, bank: Tensor, temperature: float) -> Tensor:
    """``z · bankᵀ / τ`` (``[B, N]``), computed with autocast off and half-precision inputs upcast
    to fp32, as InfoNCE and CLD: in bf16 the logits at τ 0.1 are off by up to about 0.02."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        z = at_least_fp32(z)
        return z @ bank.t().to(z.dtype) / temperature


def npid_softmax_loss(z: Tensor, bank: Tensor, index: Tensor, temperature: float) -> Tensor:
    """Full (non-parametric) softmax: ``CE(z · bankᵀ / τ, index)`` over all ``N`` instances (fp32)."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        return F.cross_entropy(npid_logits(z, bank, temperature), index)


def npid_nce_loss(
    z: Tensor,
    bank: Tensor,
    index: Tensor,
    temperature: float,
    num_negatives: int,
    normalizer: Tensor | float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """NCE with ``K`` uniformly drawn noise instances (NPID's original option).

    ``P(i|z) = exp(z·m_i/τ) / Z`` with a constant ``Z`` (``normalizer``), noise ``P_n = 1/N``:
    ``-log h(z, m_i) - Σ_k log(1 - h(z, m_k))`` with ``h = P / (P + K·P_n)``.
    """
    n, b = bank.shape[0], z.shape[0]
    noise = torch.randint(0, n, (b, num_negatives), device=z.device, generator=generator)
    idx = torch.cat([index.view(-1, 1), noise], dim=1)
    with torch.autocast(device_type=z.device.type, enabled=False):  # fp32, as the softmax
        z = at_least_fp32(z)
        weights = bank.index_select(0, idx.view(-1)).view(b, num_negatives + 1, -1).to(z.dtype)
        p = torch.exp(torch.einsum("bkd,bd->bk", weights, z) / temperature) / normalizer
        k_pn = num_negatives / n
        log_pos = torch.log(p[:, 0] / (p[:, 0] + k_pn + 1e-7))
        log_neg = torch.log(k_pn / (p[:, 1:] + k_pn + 1e-7)).sum(dim=1)
        return -(log_pos + log_neg).mean()
