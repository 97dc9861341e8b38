"""Exponential moving averages of networks (MoCo's key encoder, BYOL's target network)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` (the optimiser never sees it)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ_target ← m·θ_target + (1-m)·θ_online`` for every parameter (same order and shapes).

    Buffers (BatchNorm running statistics) are the target's own, as in MoCo and BYOL.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("EMA target and online networks have different parameter lists")
    for pt, po in zip(t_params, o_params, strict=True):
        pt.mul_(momentum).add_(po.detach().to(pt.dtype), alpha=1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int | None, end: float = 1.0) -> float:
    """BYOL's schedule ``τ_k = end - (end - base)·(cos(π k / K) + 1) / 2``; constant without ``K``."""
    if total_steps is None or total_steps <= 0:
        return base
    progress = min(1.0, max(0.0, step / total_steps))
    return end - (end - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
