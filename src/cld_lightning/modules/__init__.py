"""Stateful building blocks: memory bank, queue, EMA, distributed gathers."""

from cld_lightning.modules.distributed import gather_no_grad, gather_with_grad
from cld_lightning.modules.memory_bank import MemoryBank

__all__ = ["MemoryBank", "gather_no_grad", "gather_with_grad"]
