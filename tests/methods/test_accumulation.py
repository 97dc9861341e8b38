"""Gradient accumulation: memory bank, queue and EMA targets update once per optimiser step, with
every micro-batch of that step, so ``accumulate_grad_batches=2`` at batch 4 trains like batch 8."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cld_lightning.methods import BYOL, NPID, MoCo
from tests.helpers import MLPBackbone, augmented_views, quiet_trainer

N = 32  # instances; batch 4 -> 8 micro-batches = 4 optimiser steps at accumulate_grad_batches=2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Loader(pl.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        torch.manual_seed(0)  # the same shuffled order and noise for every batch size
        return DataLoader(augmented_views(N), batch_size=self.batch_size, shuffle=True)


def _fit(model: pl.LightningModule, batch_size: int, accumulate: int) -> pl.LightningModule:
    trainer = quiet_trainer(max_epochs=1, accumulate_grad_batches=accumulate)
    trainer.fit(model, datamodule=_Loader(batch_size))
    assert trainer.global_step == N // (batch_size * accumulate)
    return model


class _Spy:
    """Mixin: records the queue pointer seen by each micro-batch and counts state updates."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.updates = 0
        self.seen_ptr: list[int] = []

    def compute_loss(self, batch: Any, batch_idx: int) -> Any:
        if hasattr(self, "queue"):
            self.seen_ptr.append(int(self.queue.ptr))
        return super().compute_loss(batch, batch_idx)

    def update_state(self, pending: Any) -> None:
        self.updates += 1
        super().update_state(pending)


class SpyMoCo(_Spy, MoCo):
    pass


class SpyBYOL(_Spy, BYOL):
    pass


class SpyNPID(_Spy, NPID):
    pass


def _tiny(cls: type, *args: Any, **kw: Any) -> Any:
    """``cls`` on a BatchNorm-free :class:`MLPBackbone`: 8-d embedding, lr 0.5, no warm-up."""
    torch.manual_seed(0)
    return cls(MLPBackbone(batchnorm=False), *args, embed_dim=8, warmup_epochs=0, lr=0.5, **kw)


def _moco(**kw: Any) -> SpyMoCo:
    cld_off = {"enabled": False}
    return _tiny(SpyMoCo, cld_off, queue_size=64, gather_distributed=False, ema_momentum=0.9, **kw)


def _npid() -> SpyNPID:
    return _tiny(SpyNPID, N, {"enabled": False}, num_views=2)


def _assert_same_state(a: pl.LightningModule, b: pl.LightningModule) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=k)


def test_moco_queue_and_ema_once_per_optimizer_step() -> None:
    model = _fit(_moco(), batch_size=4, accumulate=2)
    assert model.updates == 4 and int(model.ema_steps) == 4
    # both micro-batches of a step see the same queue; the step's 8 keys are enqueued after it
    assert model.seen_ptr == [0, 0, 8, 8, 16, 16, 24, 24]
    assert int(model.queue.ptr) == 32


def test_moco_accumulated_equals_large_batch() -> None:
    accumulated = _fit(_moco(), batch_size=4, accumulate=2)
    large = _fit(_moco(), batch_size=8, accumulate=1)
    assert not torch.equal(large.queue.queue, _moco().queue.queue)  # the queue was written
    _assert_same_state(accumulated, large)


def test_npid_accumulated_equals_large_batch() -> None:
    accumulated = _fit(_npid(), batch_size=4, accumulate=2)
    large = _fit(_npid(), batch_size=8, accumulate=1)
    assert accumulated.updates == 4 and large.updates == 4
    assert not torch.equal(large.memory.bank, _npid().memory.bank)  # every row was updated
    _assert_same_state(accumulated, large)


def test_byol_target_schedule_counts_optimizer_steps() -> None:
    torch.manual_seed(0)
    model = SpyBYOL(
        MLPBackbone(),
        {"enabled": False},
        embed_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        warmup_epochs=0,
        ema_momentum=0.9,
    )
    _fit(model, batch_size=4, accumulate=2)
    assert model.updates == 4 and int(model.ema_steps) == 4
    # τ_k follows k/K over the 4 optimiser steps: after the last one it is 1 (the cosine's end)
    assert model.current_ema_momentum() == pytest.approx(1.0)
