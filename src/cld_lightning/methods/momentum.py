"""The base of methods with a momentum encoder: an EMA copy of the online backbone + instance head
(MoCo's key encoder, BYOL's target network; InfoMin through MoCo).

One naming scheme for all of them: the EMA copy is ``momentum_encoder`` (an ``nn.ModuleDict`` with
``"backbone"`` and ``"head"``, the copies of ``backbone`` and ``instance_head``), its momentum
``ema_momentum`` (``method.ema_momentum``), the cosine schedule of it ``ema_cosine``, the momentum
of the current step :meth:`MomentumMethod.current_ema_momentum`, and the module pairs the EMA
updates :meth:`MomentumMethod.momentum_pairs`. Checkpoints written with the earlier names
(MoCo's ``key_encoder.*``, BYOL's ``target.backbone.*`` / ``target.projector.*`` and
``target_momentum`` / ``target_cosine``) load: see :mod:`cld_lightning.methods.legacy`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.methods.base import PendingUpdate, SSLMethod
from cld_lightning.methods.schedule import total_training_steps
from cld_lightning.modules.ema import ema_step, frozen_copy, scheduled_momentum


class MomentumMethod(SSLMethod):
    """:class:`SSLMethod` + ``momentum_encoder``, an EMA copy of ``backbone`` + ``instance_head``.

    The copy is made at construction (so it is identical on all ranks: DDP broadcasts rank 0's
    module state), never sees the optimiser, has no group head, and is updated once per optimiser
    step (:meth:`update_state`): ``θ_m ← m·θ_m + (1-m)·θ_online`` with ``m`` =
    :meth:`current_ema_momentum`; the step counter ``ema_steps`` is a persistent buffer.

    Args:
        ema_momentum: the momentum ``m`` (BYOL's ``τ_base``).
        ema_cosine: raise ``m`` to 1 with a cosine over the trainer's optimiser steps
            (``m_k = 1 - (1 - m)(cos(πk/K) + 1)/2``; constant outside a Trainer).
    """

    def __init__(
        self,
        backbone: nn.Module,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        ema_momentum: float = 0.999,
        ema_cosine: bool = False,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= ema_momentum <= 1.0:
            raise ValueError(f"method.ema_momentum must be in [0, 1], got {ema_momentum}")
        super().__init__(backbone, cld, **kwargs)
        self.ema_momentum = ema_momentum
        self.ema_cosine = ema_cosine
        self.momentum_encoder = nn.ModuleDict(
            {"backbone": frozen_copy(self.backbone), "head": frozen_copy(self.instance_head)}
        )
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long), persistent=True)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The ``(online, momentum copy)`` module pairs the EMA updates."""
        return [
            (self.backbone, self.momentum_encoder["backbone"]),
            (self.instance_head, self.momentum_encoder["head"]),
        ]

    @torch.no_grad()
    def momentum_projection(self, x: Tensor) -> Tensor:
        """``head_m(backbone_m(x))``, not normalised (BYOL's target projection)."""
        return self.momentum_encoder["head"](
            self.momentum_encoder["backbone"](self.prepare_input(x))
        )

    def current_ema_momentum(self) -> float:
        """The momentum of this step: ``ema_momentum``, or its cosine schedule (``ema_cosine``)."""
        steps = total_training_steps(self)
        return scheduled_momentum(self.ema_momentum, int(self.ema_steps), steps, self.ema_cosine)

    def momentum_update(self) -> float:
        """One EMA step of ``momentum_encoder``; returns the momentum used."""
        return ema_step(self.momentum_pairs(), self.current_ema_momentum(), self.ema_steps)

    def update_state(self, pending: PendingUpdate) -> None:
        """After the optimiser step: the EMA step of the momentum encoder."""
        self.momentum_update()


__all__ = ["MomentumMethod"]
