"""BYOL(+CLD): symmetric regression loss (+ exactly λ·L_CLD), BN projector/predictor, target EMA
with the cosine τ schedule, checkpointing, kNN embedding, fast_dev_run with CLD on/off."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from cld_lightning.losses import byol_regression_loss
from cld_lightning.methods import PendingUpdate
from tests.helpers import (
    TinyViews,
    assert_cld_adds_exactly_lambda_lcld,
    first_batch,
    make_byol,
    quiet_trainer,
)


def test_architecture_sizes_and_bn() -> None:
    model = make_byol()
    proj, pred = model.instance_head, model.predictor
    assert [type(m) for m in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (proj[0].in_features, proj[0].out_features, proj[3].out_features) == (32, 32, 16)
    assert (pred[0].in_features, pred[0].out_features, pred[3].out_features) == (16, 24, 16)
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    for a, b in zip(
        model.momentum_encoder["backbone"].state_dict().values(),
        model.backbone.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)  # initialised as a copy
    with pytest.raises(ValueError, match="method.instance_head"):
        make_byol(instance_head="mlp")
    with pytest.raises(ValueError, match="method.ema_momentum"):
        make_byol(ema_momentum=2.0)
    with pytest.raises(ValueError, match="method.knn_feature"):
        make_byol(knn_feature="nope")


def test_loss_is_symmetric_regression_of_online_prediction_on_target() -> None:
    model = make_byol(cld=False)
    batch = first_batch(2)
    v1, v2 = batch[0]
    losses, _ = model.compute_loss(batch, 0)
    p1 = model.predictor(model.instance_head(model.features(v1)))
    p2 = model.predictor(model.instance_head(model.features(v2)))
    z1 = model.momentum_encoder["head"](model.momentum_encoder["backbone"](v1))
    z2 = model.momentum_encoder["head"](model.momentum_encoder["backbone"](v2))
    expected = byol_regression_loss(p1, z2) + byol_regression_loss(p2, z1)
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.predictor[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.momentum_encoder.parameters())


def test_cld_adds_exactly_lambda_times_lcld() -> None:
    model = make_byol(cld=True)
    losses = assert_cld_adds_exactly_lambda_lcld(
        model, first_batch(2), (0, 1), lambda: make_byol(cld=False)
    )
    losses["loss"].backward()
    assert model.group_head.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_target_ema_exact() -> None:
    model = make_byol(ema_momentum=0.9, ema_cosine=False)
    with torch.no_grad():
        for p in [*model.backbone.parameters(), *model.instance_head.parameters()]:
            p.add_(0.01)
    before = [p.clone() for p in model.momentum_encoder.parameters()]
    model.update_state(PendingUpdate())
    online = [*model.backbone.parameters(), *model.instance_head.parameters()]
    for t, b, o in zip(model.momentum_encoder.parameters(), before, online, strict=True):
        assert torch.equal(t, b.mul(0.9).add(o, alpha=0.1))
    assert int(model.ema_steps) == 1


def test_cosine_tau_schedule_in_training_and_checkpoint(tmp_path) -> None:
    model = make_byol(ema_momentum=0.9)
    seen: list[float] = []
    original = model.current_ema_momentum

    def record() -> float:
        seen.append(original())
        return seen[-1]

    model.current_ema_momentum = record  # type: ignore[method-assign]
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, DataLoader(TinyViews(n=32), batch_size=8))
    assert seen == pytest.approx([1 - 0.1 * (math.cos(math.pi * k / 4) + 1) / 2 for k in range(4)])
    path = tmp_path / "byol.ckpt"
    trainer.save_checkpoint(path)
    fresh = make_byol(seed=3)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert any(k.startswith("momentum_encoder.backbone.") for k in state) and "ema_steps" in state
    fresh.load_state_dict(state)
    for a, b in zip(
        fresh.momentum_encoder.state_dict().values(),
        model.momentum_encoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    assert int(fresh.ema_steps) == 4


def test_knn_embedding_choices() -> None:
    x = first_batch(1)[0][0]
    model = make_byol().eval()
    z = model.embed(x)
    assert z.shape == (8, 32)  # the backbone feature (width 4 -> 32-d), L2-normalised
    torch.testing.assert_close(z.norm(dim=1), torch.ones(8))
    proj = make_byol(knn_feature="projection").eval()
    assert proj.embed(x).shape == (8, 16)


@pytest.mark.parametrize("cld", [False, True])
def test_fast_dev_run(cld: bool, tmp_path) -> None:
    model = make_byol(cld=cld)
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, DataLoader(TinyViews(n=16), batch_size=8))
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert int(model.ema_steps) == 1
    assert ("cld/loss_step" in trainer.callback_metrics) == cld
