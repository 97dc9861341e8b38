"""MoCo's shuffling BatchNorm for the key encoder: shuffle the batch across processes.

Each process computes BatchNorm statistics of the key encoder on a random subset of the global
batch, so queries and their keys do not share batch statistics (MoCo §3.3). With one process the
functions are the identity (there is nothing to shuffle across; BN over the whole local batch is
permutation invariant). Every process must hold the same batch size (``drop_last=True``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from cld_lightning.modules.distributed import dist_ready, gather_no_grad


@torch.no_grad()
def batch_shuffle(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Gather ``x`` from all processes, permute it (permutation broadcast from rank 0), and return
    this rank's slice together with the indices that undo the shuffle (``None`` on one process)."""
    if not dist_ready():
        return x, None
    local = x.shape[0]
    x_all = gather_no_grad(x)
    perm = torch.randperm(x_all.shape[0], device=x.device)
    dist.broadcast(perm, src=0)
    unshuffle = torch.argsort(perm)
    rank = dist.get_rank()
    return x_all[perm.view(dist.get_world_size(), -1)[rank]], unshuffle.view(-1, local)[rank]


@torch.no_grad()
def batch_unshuffle(x: Tensor, unshuffle: Tensor | None) -> Tensor:
    """Undo :func:`batch_shuffle` on the key encoder's outputs: this rank's own samples, in order."""
    if unshuffle is None:
        return x
    return gather_no_grad(x)[unshuffle]
