"""Distributed helpers with explicit semantics (gather with gradient, rank queries)."""

from __future__ import annotations

import atexit

import torch
import torch.distributed as dist
from torch import Tensor


def dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_exit_hook_registered = False


def _destroy_default_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group when this process exits (registered once per process).

    Lightning registers this only for NCCL. A gloo group still alive at interpreter exit lets its
    threads be destroyed unjoined ("terminate called without an active exception", SIGABRT) in a
    rank that exits before its peers, as ``ddp_spawn``'s non-zero ranks do: measured on 2.14 CPU,
    3 of 40 two-rank spawns aborted without this hook, none of 100 with it. No-op when not distributed.
    """
    global _exit_hook_registered
    if _exit_hook_registered or not (dist.is_available() and dist.is_initialized()):
        return
    atexit.register(_destroy_default_group)
    _exit_hook_registered = True


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward all-reduces (sums) the gradients and returns the local slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.batch = x.shape[0]
        ctx.rank = dist.get_rank()
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all processes (rank order); identity when not distributed."""
    if not dist_ready():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all processes without gradient; identity when not distributed."""
    if not dist_ready():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
