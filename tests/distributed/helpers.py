"""Distributed-test pieces: gloo process spawning, subprocess script environment, fault injection.

Tiny data, models and the quiet Trainer: :mod:`tests.helpers`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cld_lightning.methods import BYOL, NPID, MoCo
from cld_lightning.modules.shuffle_bn import batch_shuffle, batch_unshuffle
from tests.helpers import MLPBackbone, free_port, make_npid


def script_env() -> dict[str, str]:
    """Environment for a test script run in a subprocess: the repository and ``src`` importable,
    one OpenMP thread."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pythonpath = f"{root}{os.pathsep}{os.path.join(root, 'src')}"
    return {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], *args: Any, world: int = 2) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` gloo processes (fn must be importable)."""
    mp.spawn(_worker, args=(world, free_port(), fn, args), nprocs=world, join=True)


class NaNNPID(NPID):
    """NPID whose loss is NaN at global step ``nan_step`` (on ``nan_rank`` only, -1 = all ranks);
    counts ``update_state`` calls."""

    def __init__(self, *args: Any, nan_step: int = 2, nan_rank: int = -1, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.nan_step, self.nan_rank = nan_step, nan_rank
        self.update_calls = 0

    def compute_loss(self, batch: Any, batch_idx: int) -> Any:
        losses, pending = super().compute_loss(batch, batch_idx)
        rank_hit = self.nan_rank < 0 or self.global_rank == self.nan_rank
        if self.global_step == self.nan_step and rank_hit:
            losses["loss"] = losses["loss"] * float("nan")
        return losses, pending

    def update_state(self, pending: Any) -> None:
        self.update_calls += 1
        super().update_state(pending)


class SaveStates(pl.Callback):
    """Rank 0 saves the module's state_dict after each training batch to ``out/step{i}.pt``
    (``all_ranks``: every rank, to ``out/step{i}_rank{r}.pt``)."""

    def __init__(self, out: str, all_ranks: bool = False) -> None:
        self.out, self.all_ranks = out, all_ranks

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        state = {k: v.clone() for k, v in pl_module.state_dict().items()}
        if self.all_ranks:
            torch.save(state, f"{self.out}/step{batch_idx}_rank{trainer.global_rank}.pt")
        elif trainer.is_global_zero:
            torch.save(state, f"{self.out}/step{batch_idx}.pt")


# ------------------------------------------------------- the one 2-process spawn (conftest.py)
# Process start-up dominates the 2-process tests: `ddp_worker` runs every check's rank work in
# one spawn; the tests read what it saved (fixture `ddp_results`).
DDP_ROWS, DDP_BATCH = 32, 8  # NPID: bank rows, per-rank batch (test_ddp_correctness)
SHUFFLE_BATCH = 4  # MoCo / BYOL: per-rank batch (test_moco_byol_ddp)


def ddp_batch(lo: int, hi: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Rows ``lo:hi`` of one fixed float64 batch of ``2 * DDP_BATCH`` two-view samples."""
    g = torch.Generator().manual_seed(7)
    views = [torch.rand(2 * DDP_BATCH, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    index = torch.arange(3, 3 + 2 * DDP_BATCH)  # 16 distinct bank rows out of 32
    return [v[lo:hi] for v in views], torch.zeros(hi - lo, dtype=torch.long), index[lo:hi]


def ddp_npid(scope: str) -> NPID:
    """A float64 NPID+CLD without BatchNorm, CLD clustering over ``scope`` (global / local)."""
    return make_npid(DDP_ROWS, cld={"cluster_scope": scope}, batchnorm=False).double()


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def loss_step(model: Any, batch: Any) -> tuple[dict, Any]:
    """``compute_loss`` and backward; returns ``(losses, pending state update)``."""
    losses, pending = model.compute_loss(batch, 0)
    losses["loss"].backward()
    return losses, pending


def _npid_worker(rank: int, world: int, out: str) -> None:
    result = {}
    lo, hi = rank * DDP_BATCH, (rank + 1) * DDP_BATCH
    for scope in ("global", "local"):
        model = ddp_npid(scope)
        losses, pending = loss_step(model, ddp_batch(lo, hi))
        grads = grads_of(model)
        for g in grads.values():  # what DDP does
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            g /= world
        model.update_state(pending)  # gather_distributed=True
        result[scope] = {
            "cld": model.last_cld_output.loss.detach(),
            "grads": grads,
            "bank": model.memory.bank.clone(),
            "loss": losses["loss"].detach(),
        }
    torch.save(result, f"{out}/rank{rank}.pt")


def _views(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)  # each rank holds different images
    return [torch.rand(SHUFFLE_BATCH, 3, 8, 8, generator=g) for _ in range(2)]


def _train_step(model: Any, rank: int, world: int) -> Any:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    b = SHUFFLE_BATCH
    batch = (_views(rank), torch.zeros(b, dtype=torch.long), torch.arange(b) + rank * b)
    losses, pending = loss_step(model, batch)
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world
    opt.step()
    model.update_state(pending)
    return pending


def _moco_byol_worker(rank: int, world: int, out: str) -> None:
    res: dict = {}
    b = SHUFFLE_BATCH
    # shuffle-BN helpers
    torch.manual_seed(rank)
    x = torch.arange(2 * b * 3, dtype=torch.float32).view(2 * b, 3)[rank * b : (rank + 1) * b]
    xs, unshuffle = batch_shuffle(x)
    res["shuffled"], res["unshuffled"] = xs, batch_unshuffle(xs * 2, unshuffle)
    tiny = {"embed_dim": 8, "warmup_epochs": 0, "cld": {"num_clusters": 2, "out_dim": 8}}
    # MoCo
    torch.manual_seed(0)
    moco = MoCo(MLPBackbone(), queue_size=24, num_crops=2, **tiny)
    queue0 = moco.queue.queue.clone()
    pending = _train_step(moco, rank, world)
    res["moco"] = {
        "queue0": queue0,
        "queue": moco.queue.queue.clone(),
        "ptr": moco.queue.ptr.clone(),
        "keys": pending.keys.clone(),
        "momentum_encoder": {k: v.clone() for k, v in moco.momentum_encoder.named_parameters()},
        "params": {k: v.detach().clone() for k, v in moco.named_parameters()},
    }
    # BYOL (BatchNorm running statistics are synchronised by DDP's broadcast_buffers, not here)
    torch.manual_seed(0)
    byol = BYOL(
        MLPBackbone(), projector_hidden_dim=16, predictor_hidden_dim=16, ema_cosine=False, **tiny
    )
    _train_step(byol, rank, world)
    res["byol"] = {"target": {k: v.clone() for k, v in byol.momentum_encoder.named_parameters()}}
    torch.save(res, f"{out}/moco_rank{rank}.pt")


def ddp_worker(rank: int, world: int, out: str) -> None:
    """One spawn for all 2-process checks: ``rank{r}.pt`` (NPID, test_ddp_correctness) and
    ``moco_rank{r}.pt`` (MoCo / BYOL, test_moco_byol_ddp)."""
    _npid_worker(rank, world, out)
    _moco_byol_worker(rank, world, out)
