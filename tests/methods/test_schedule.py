"""LR schedule: warm-up (in epochs of optimiser steps) then cosine to the last step, for runs
bounded by max_epochs or by max_steps, with and without gradient accumulation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import pytorch_lightning as pl

from cld_lightning.methods.schedule import warmup_cosine
from tests.helpers import TinyDataModule, make_npid, quiet_trainer

BASE_LR = 0.1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _RecordLR(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])  # the LR this optimiser step uses


def _lrs(**trainer_kw: Any) -> list[float]:
    rec = _RecordLR()
    model = make_npid(warmup_epochs=1, lr=BASE_LR)
    trainer = quiet_trainer(callbacks=[rec], **trainer_kw)
    trainer.fit(model, datamodule=TinyDataModule())  # 5 batches per epoch
    return rec.lrs


def _expected(total: int, warmup: int) -> list[float]:
    return [BASE_LR * warmup_cosine(k, total, warmup) for k in range(total)]


@pytest.mark.parametrize(
    "trainer_kw,total,warmup",
    [
        ({"max_epochs": -1, "max_steps": 12}, 12, 5),  # max_steps only: 1 epoch = 5 steps
        ({"max_epochs": 10, "max_steps": 12}, 12, 5),  # max_steps ends the run first
        ({"max_epochs": 3}, 15, 5),
    ],
)
def test_warmup_then_cosine_to_the_last_step(trainer_kw: dict, total: int, warmup: int) -> None:
    lrs = _lrs(**trainer_kw)
    assert len(lrs) == total
    assert lrs == pytest.approx(_expected(total, warmup), rel=1e-6)
    assert lrs[warmup - 1] == pytest.approx(BASE_LR)  # warm-up ends after one epoch
    assert lrs[-1] < 0.05 * BASE_LR  # and the run decays to (almost) zero


def test_warmup_counts_optimizer_steps_under_accumulation() -> None:
    # 5 batches / accumulate 2 = 3 optimiser steps per epoch (Lightning steps on the last batch)
    lrs = _lrs(max_epochs=-1, max_steps=9, accumulate_grad_batches=2)
    assert len(lrs) == 9
    assert lrs == pytest.approx(_expected(9, 3), rel=1e-6)


def test_cosine_needs_a_finite_run() -> None:
    with pytest.raises(ValueError, match=r"trainer\.max_epochs or trainer\.max_steps"):
        _lrs(max_epochs=-1, max_steps=-1)
    assert math.isfinite(_lrs(max_epochs=1)[-1])
