"""Shared pieces for the distributed / resume / fault tests: tiny data, tiny models, spawning."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cld_lightning.methods import NPID


class MLPBackbone(nn.Module):
    """Flatten -> Linear -> BatchNorm -> ReLU -> Linear (BatchNorm makes batch composition matter)."""

    def __init__(
        self,
        in_dim: int = 3 * 8 * 8,
        hidden: int = 32,
        feature_dim: int = 16,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyViews(Dataset):
    """``(views, target, index)``: two randomly augmented (noise + random flip) views."""

    def __init__(self, n: int = 40, shape: tuple[int, ...] = (3, 8, 8)) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.rand(n, *shape, generator=g)
        self.y = torch.arange(n) % 4

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        views = []
        for _ in range(2):
            v = self.x[i] + 0.1 * torch.randn_like(self.x[i])
            if torch.rand(()) < 0.5:
                v = v.flip(-1)
            views.append(v)
        return views, self.y[i], i


class TinyDataModule(pl.LightningDataModule):
    def __init__(self, n: int = 40, batch_size: int = 8) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size
        self.dataset = TinyViews(n)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)


def make_npid(
    n: int = 40,
    seed: int = 0,
    in_dim: int = 3 * 8 * 8,
    cld: dict | None = None,
    batchnorm: bool = True,
    **kw: Any,
) -> NPID:
    torch.manual_seed(seed)
    cld_cfg = {"num_clusters": 4, "out_dim": 8, **(cld or {})}
    kw.setdefault("warmup_epochs", 0)
    kw.setdefault("lr", 0.1)
    return NPID(
        MLPBackbone(in_dim, batchnorm=batchnorm),
        n,
        cld_cfg,
        embed_dim=8,
        knn_k=5,
        num_classes=4,
        **kw,
    )


def quiet_trainer(**kw: Any) -> pl.Trainer:
    base = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_checkpointing=False,
    )
    base.update(kw)
    return pl.Trainer(**base)


def script_env() -> dict[str, str]:
    """Environment for a test script run in a subprocess: the repository and ``src`` importable,
    one OpenMP thread."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pythonpath = f"{root}{os.pathsep}{os.path.join(root, 'src')}"
    return {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """Rank 0 saves the module's state_dict after each training batch to ``out/step{i}.pt``."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero:
            torch.save(
                {k: v.clone() for k, v in pl_module.state_dict().items()},
                f"{self.out}/step{batch_idx}.pt",
            )
