"""Exponential moving averages of networks (MoCo's key encoder, BYOL's target network).

The one home of EMA logic: :func:`frozen_copy` makes the target, :func:`scheduled_momentum` gives
the momentum of a step (constant or BYOL's cosine schedule), :func:`ema_step` applies it to
``(online, target)`` module pairs and counts the step. Pairs are always ``(online, target)``, the
order of ``MomentumMethod.momentum_pairs``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` (the optimiser never sees it)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """``θ_target ← m·θ_target + (1-m)·θ_online`` for every parameter (same order and shapes).

    Buffers (BatchNorm running statistics) are the target's own, as in MoCo and BYOL. A target
    with trainable parameters next to a frozen online network (the pair swapped) raises.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("EMA target and online networks have different parameter lists")
    if any(p.requires_grad for p in t_params) and not any(p.requires_grad for p in o_params):
        raise ValueError(
            "ema_update(online, target, momentum): the target is trainable and the online "
            "network frozen; the pair is swapped (the order is (online, target))"
        )
    for pt, po in zip(t_params, o_params, strict=True):
        pt.mul_(momentum).add_(po.detach().to(pt.dtype), alpha=1.0 - momentum)


def cosine_momentum(base: float, step: int, total_steps: int | None, end: float = 1.0) -> float:
    """BYOL's schedule ``τ_k = end - (end - base)·(cos(π k / K) + 1) / 2``; constant without ``K``."""
    if total_steps is None or total_steps <= 0:
        return base
    progress = min(1.0, max(0.0, step / total_steps))
    return end - (end - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def scheduled_momentum(base: float, step: int, total_steps: int | None, cosine: bool) -> float:
    """The EMA momentum of step ``step``: ``base``, or :func:`cosine_momentum` when ``cosine``."""
    return cosine_momentum(base, step, total_steps) if cosine else base


@torch.no_grad()
def ema_step(
    pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float, steps: Tensor | None = None
) -> float:
    """:func:`ema_update` of every ``(online, target)`` pair with ``momentum``; then ``steps += 1``
    (the persistent step counter, when given). Returns ``momentum``."""
    for online, target in pairs:
        ema_update(online, target, momentum)
    if steps is not None:
        steps += 1
    return momentum
