"""Stateful building blocks: memory bank, queue, EMA, shuffle-BN, distributed gathers."""

from cld_lightning.modules.distributed import gather_no_grad, gather_with_grad
from cld_lightning.modules.ema import (
    cosine_momentum,
    ema_step,
    ema_update,
    frozen_copy,
    scheduled_momentum,
)
from cld_lightning.modules.memory_bank import MemoryBank
from cld_lightning.modules.queue import FeatureQueue
from cld_lightning.modules.shuffle_bn import batch_shuffle, batch_unshuffle

__all__ = [
    "FeatureQueue",
    "MemoryBank",
    "batch_shuffle",
    "batch_unshuffle",
    "cosine_momentum",
    "ema_step",
    "ema_update",
    "frozen_copy",
    "gather_no_grad",
    "gather_with_grad",
    "scheduled_momentum",
]
