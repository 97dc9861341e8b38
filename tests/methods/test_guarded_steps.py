"""A non-finite step changes nothing: a run that sees one NaN batch ends with the weights, buffers
(BatchNorm statistics, EMA copy, bank, queue, NCE normaliser) and optimiser state of a run that
skips that batch; too many skips in a row stop the run with one line."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from cld_lightning.app.errors import NonFiniteTrainingError
from cld_lightning.app.faults import NonFiniteGuard
from cld_lightning.methods import BYOL, NPID, MoCo
from tests.helpers import MLPBackbone, TinyViews, quiet_trainer

NAN_BATCH = 1


class NaNPixel(TinyViews):
    """:class:`TinyViews` (8x8, deterministic) with one NaN pixel in image ``bad``'s first view."""

    def __init__(self, bad: int | None) -> None:
        super().__init__(16, size=8, num_classes=4, seed=5)
        self.bad = bad

    def __getitem__(self, i: int) -> Any:
        views, y, idx = super().__getitem__(i)
        if i == self.bad:
            views[0] = views[0].clone()
            views[0][0, 3, 3] = float("nan")
        return views, y, idx


def _skip_batch(cls: type) -> type:
    """``cls`` whose training step returns None for batch ``NAN_BATCH`` before any forward pass
    (NPID with the full softmax, nce_k=0: NCE draws noise from the global RNG)."""

    class Skipping(cls):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == NAN_BATCH:
                return None
            return super().training_step(batch, batch_idx)

    return Skipping


def _make(cls: type, nce_k: int = 0) -> Any:
    torch.manual_seed(0)
    tiny = {"embed_dim": 8, "warmup_epochs": 0, "knn_k": 3, "num_classes": 4, "lr": 0.1}
    cld = {"num_clusters": 3, "out_dim": 8}
    if issubclass(cls, NPID):
        return cls(MLPBackbone(), 16, cld, nce_k=nce_k, **tiny)
    if issubclass(cls, MoCo):
        return cls(MLPBackbone(), cld, queue_size=12, gather_distributed=False, **tiny)
    return cls(MLPBackbone(), cld, projector_hidden_dim=16, predictor_hidden_dim=16, **tiny)


def _fit(model: Any, bad: int | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    trainer = quiet_trainer(max_epochs=1, deterministic=True)
    loader = DataLoader(NaNPixel(bad), batch_size=4, shuffle=False)
    torch.manual_seed(1)
    trainer.fit(model, train_dataloaders=loader)
    return model.state_dict(), trainer.optimizers[0].state_dict()


@pytest.mark.parametrize("cls", [NPID, MoCo, BYOL], ids=["npid", "moco", "byol"])
def test_nan_batch_equals_skipped_batch(cls: type) -> None:
    seen, seen_opt = _fit(_make(cls), bad=4 * NAN_BATCH + 2)  # one NaN pixel in batch 1
    ref, ref_opt = _fit(_make(_skip_batch(cls)), bad=None)
    assert int(seen["skipped_steps"]) == 1 and int(ref["skipped_steps"]) == 0
    assert any("running_mean" in k for k in seen)  # BatchNorm statistics are compared
    for key in ref:
        if key != "skipped_steps":
            assert torch.equal(seen[key], ref[key]), key
    for i, state in ref_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(seen_opt["state"][i][name], value), (i, name)
    assert all(torch.isfinite(v).all() for v in seen.values() if v.is_floating_point())


def test_skipped_step_restores_forward_buffers_and_counts() -> None:
    model = _make(NPID, nce_k=4)
    batch = next(iter(DataLoader(NaNPixel(0), batch_size=4)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.training_step(batch, 0) is None
    after = model.state_dict()
    assert int(after["skipped_steps"]) == 1 and model.consecutive_skips == 1
    for key in before:
        if key != "skipped_steps":
            assert torch.equal(before[key], after[key]), key
    assert float(model.nce_normalizer) == -1.0  # not estimated from the NaN batch
    good = next(iter(DataLoader(NaNPixel(None), batch_size=4)))
    assert model.training_step(good, 1) is not None
    assert model.consecutive_skips == 0
    assert not torch.equal(
        before["backbone.net.2.running_mean"], model.backbone.net[2].running_mean
    )


class AlwaysNaN(NPID):
    """NPID whose loss is NaN from global step 1 on."""

    def compute_loss(self, batch: Any, batch_idx: int) -> Any:
        losses, pending = super().compute_loss(batch, batch_idx)
        if self.global_step >= 1:
            losses["loss"] = losses["loss"] * float("nan")
        return losses, pending


def test_consecutive_skips_stop_the_run(tmp_path) -> None:
    model = _make(AlwaysNaN)
    trainer = quiet_trainer(max_epochs=3, callbacks=[NonFiniteGuard(max_consecutive_skips=3)])
    loader = DataLoader(NaNPixel(None), batch_size=4)
    with pytest.raises(NonFiniteTrainingError) as err:
        trainer.fit(model, train_dataloaders=loader)
    msg = str(err.value)
    assert "non-finite (NaN/inf) 3 steps in a row" in msg and "method.lr" in msg
    assert "max_consecutive_skips=3" in msg and "checkpoint: none written yet" in msg
    assert "\n" not in msg
    assert int(model.skipped_steps) == 3 and trainer.global_step == 4  # 1 real + 3 skipped


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_guard_limit_is_checked(bad: Any) -> None:
    with pytest.raises(ValueError, match="callbacks.non_finite.max_consecutive_skips"):
        NonFiniteGuard(max_consecutive_skips=bad)
