"""A real Lightning DDP run: ``Trainer(strategy="ddp_spawn", devices=2)`` on gloo trains NPID+CLD
(global cluster scope, gathered memory-bank updates, cosine LR) to the same weights and bank as one
process fed the same global batches.

Under pytest ``ddp_spawn`` is used: ``strategy="ddp"`` would relaunch pytest itself per rank.
Without BatchNorm (per-rank batch statistics are a different model, see ``test_moco.py``'s
SyncBN test) and with fixed views, the only differences are float summation orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tests.helpers import make_npid, quiet_trainer

N, B, WORLD = 32, 4, 2  # 32 instances, 4 per rank and step -> 4 optimiser steps in one epoch
SEED = 0  # Lightning's distributed sampler seed (PL_GLOBAL_SEED)


class FixedViews(Dataset):
    """``(views, target, index)`` with two fixed views per image (no random augmentation)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        self.views = torch.rand(2, N, 3, 8, 8, generator=g)
        self.y = torch.arange(N) % 4

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> Any:
        return [self.views[0, i], self.views[1, i]], self.y[i], i


class GatheredOrder(Sampler):
    """One process's view of the DDP global batches: per step rank 0's samples, then rank 1's.

    Lightning gives each training rank ``DistributedSampler(shuffle=True, seed=PL_GLOBAL_SEED)``
    (epoch 0); all-gathers put rank 0's rows first (k-means' ``first`` init reads the first rows).
    """

    def __iter__(self) -> Iterator[int]:
        shards = []
        for rank in range(WORLD):
            sampler = DistributedSampler(range(N), num_replicas=WORLD, rank=rank, seed=SEED)
            sampler.set_epoch(0)
            shards.append(list(sampler))
        for step in range(N // (WORLD * B)):
            for shard in shards:
                yield from shard[step * B : (step + 1) * B]

    def __len__(self) -> int:
        return N


class SaveFinalState(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        world = dist.get_world_size() if dist.is_initialized() else 1
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        from cld_lightning.modules import distributed

        torch.save(
            {
                "state": state,
                "world": world,
                "steps": trainer.global_step,
                "exit_hook": distributed._exit_hook_registered,
            },
            f"{self.out}/rank{trainer.global_rank}_of{world}.pt",
        )


def _fit(out: Path, devices: int, loader: DataLoader) -> None:
    model = make_npid(N, cld={"cluster_scope": "global"}, batchnorm=False)
    trainer = quiet_trainer(
        max_epochs=1,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        callbacks=[SaveFinalState(str(out))],
        log_every_n_steps=1,
    )
    trainer.fit(model, loader)


def test_lightning_ddp_spawn_matches_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", str(SEED))  # the spawned ranks inherit it
    data = FixedViews()
    _fit(tmp_path, 2, DataLoader(data, batch_size=B, shuffle=False, drop_last=True))
    _fit(tmp_path, 1, DataLoader(data, batch_size=WORLD * B, sampler=GatheredOrder()))
    ranks = [torch.load(tmp_path / f"rank{r}_of2.pt") for r in range(WORLD)]
    single = torch.load(tmp_path / "rank0_of1.pt")
    init_model = make_npid(N, cld={"cluster_scope": "global"}, batchnorm=False)
    init = init_model.state_dict()
    trained = {n for n, _ in init_model.named_parameters()} | {"memory.bank"}

    assert [r["world"] for r in ranks] == [2, 2] and single["world"] == 1
    assert [r["exit_hook"] for r in ranks] == [True, True]  # every rank destroys its group at exit
    assert ranks[0]["steps"] == ranks[1]["steps"] == single["steps"] == N // (WORLD * B)
    ref = single["state"]
    assert ranks[0]["state"].keys() == ref.keys()
    assert "group_head.weight" in ref and "memory.bank" in ref
    for name, value in ref.items():
        if not value.is_floating_point():
            continue
        moved = float((value - init[name]).abs().max())
        for r in ranks:
            diff = float((r["state"][name] - value).abs().max())
            assert diff < 1e-5, f"{name}: DDP differs from one process by {diff:.2e}"
        # the comparison is not vacuous: training moved every parameter and every bank row
        assert name not in trained or moved > 1e-3, f"{name} did not change ({moved:.1e})"
    rows_moved = (ref["memory.bank"] - init["memory.bank"]).abs().sum(1) > 0
    assert bool(rows_moved.all())
