"""InfoNCE against a key and a queue of negatives (MoCo, He et al. 2020), pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cld_lightning.modules.precision import at_least_fp32


def infonce_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """``[q·k, q·queueᵀ] / τ``: ``[B, 1 + K]`` with the positive in column 0.

    ``q``, ``k``: ``[B, D]`` (L2-normalised); ``queue``: ``[K, D]`` negatives (may be empty).
    Nothing is detached here: MoCo's caller passes a key computed without gradient. Computed
    with autocast off, half-precision inputs upcast to fp32 (small ``τ`` amplifies rounding).
    """
    if q.shape != k.shape:
        raise ValueError(
            f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=q.device.type, enabled=False):  # logits in fp32 at least
        q, k, queue = (at_least_fp32(t) for t in (q, k, queue))
        pos = (q * k).sum(dim=1, keepdim=True)
        neg = q @ queue.t().to(q.dtype)
        return torch.cat([pos, neg], dim=1) / temperature


def infonce_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's contrastive loss ``-log softmax([q·k, q·queueᵀ]/τ)[0]``, averaged over the batch."""
    logits = infonce_logits(q, k, queue, temperature)
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def infonce_accuracy(q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
    """How often the positive key beats every queue entry (no gradient)."""
    with torch.no_grad():
        return (infonce_logits(q, k, queue, 1.0).argmax(dim=1) == 0).float().mean()
