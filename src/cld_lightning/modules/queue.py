"""MoCo's dictionary queue: a FIFO of L2-normalised keys kept in persistent buffers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.modules.distributed import gather_no_grad


class FeatureQueue(nn.Module):
    """A ``[size, dim]`` FIFO of keys (MoCo's negatives) with a write pointer ``ptr``.

    Both buffers are persistent, so the queue survives a checkpoint. Initialised as MoCo: random
    Gaussian rows, L2-normalised. :meth:`enqueue` overwrites the oldest rows with wrap-around, so
    any batch size works (no divisibility requirement); a batch larger than the queue keeps its
    last ``size`` keys. ``gather_distributed=True`` enqueues the keys of all processes (rank
    order), so every rank holds the same queue.
    """

    def __init__(self, size: int, dim: int, gather_distributed: bool = True) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"method.queue_size must be >= 1, got {size}")
        if dim < 1:
            raise ValueError(f"queue dim must be >= 1, got {dim}")
        self.size = size
        self.dim = dim
        self.gather_distributed = gather_distributed
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1), persistent=True)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long), persistent=True)

    def forward(self) -> Tensor:
        """The current keys ``[size, dim]`` (a buffer: no gradient)."""
        return self.queue

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` ``[B, dim]`` at ``ptr`` (wrapping around) and advance ``ptr`` by ``B``."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be [B, {self.dim}], got {tuple(keys.shape)}")
        keys = keys.detach()
        if self.gather_distributed:
            keys = gather_no_grad(keys)
        n = keys.shape[0]
        if n == 0:
            return
        start = int(self.ptr)
        rows = (start + torch.arange(n, device=self.queue.device)) % self.size
        if n > self.size:  # only the newest `size` keys survive
            rows, keys = rows[-self.size :], keys[-self.size :]
        self.queue.index_copy_(0, rows, keys.to(self.queue.dtype))
        self.ptr.fill_((start + n) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, gather_distributed={self.gather_distributed}"
