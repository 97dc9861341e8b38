"""MoCo(+CLD): loss = InfoNCE (+ exactly λ·L_CLD), crop semantics, EMA key encoder, queue FIFO,
checkpointing, fast_dev_run for every crop x CLD setting, shuffle-BN and gathered enqueue on 2
gloo processes."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from cld_lightning.losses import infonce_loss
from cld_lightning.methods import MoCo
from tests.helpers import (
    MLPBackbone,
    TinyViews,
    assert_cld_adds_exactly_lambda_lcld,
    first_batch,
    make_moco,
    quiet_trainer,
)


@pytest.mark.parametrize("crops", [2, 3])
def test_instance_loss_is_infonce_against_key_and_queue(crops: int) -> None:
    model = make_moco(cld=False, num_crops=crops)
    batch = first_batch(crops)
    views = batch[0]
    with torch.no_grad():  # a key encoder unlike the query encoder: a key from the wrong one shows
        for p in model.momentum_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    losses, pending = model.compute_loss(batch, 0)
    keys = pending.keys
    with torch.no_grad():  # the last crop through the key encoder's own modules, normalised
        k = model.momentum_encoder["head"](model.momentum_encoder["backbone"](views[crops - 1]))
        k = F.normalize(k, dim=1)
    torch.testing.assert_close(keys, k)
    queries = [model.embed(v) for v in views[: crops - 1]]
    expected = torch.stack([infonce_loss(q, k, model.queue.queue, 0.07) for q in queries]).mean()
    torch.testing.assert_close(losses["instance_loss"], expected)
    torch.testing.assert_close(losses["loss"], expected)


def test_symmetric_two_crops_enqueues_both_keys() -> None:
    model = make_moco(cld=False, symmetric=True)
    batch = first_batch(2)
    v1, v2 = batch[0]
    losses, pending = model.compute_loss(batch, 0)
    keys = pending.keys
    k1, k2 = model.key_embedding(v1), model.key_embedding(v2)
    q1, q2 = model.embed(v1), model.embed(v2)
    expected = 0.5 * (
        infonce_loss(q1, k2, model.queue.queue, 0.07)
        + infonce_loss(q2, k1, model.queue.queue, 0.07)
    )
    torch.testing.assert_close(losses["loss"], expected)
    torch.testing.assert_close(keys, torch.cat([k2, k1]))


@pytest.mark.parametrize("crops,symmetric", [(2, False), (2, True), (3, False)])
def test_cld_adds_exactly_lambda_times_lcld(crops: int, symmetric: bool) -> None:
    model = make_moco(cld=True, num_crops=crops, symmetric=symmetric)
    batch = first_batch(crops)
    # 2 crops: CLD on query-encoder features of crops 1 and 2; 3 crops: crops 1 and 2.
    losses = assert_cld_adds_exactly_lambda_lcld(
        model, batch, (0, 1), lambda: make_moco(cld=False, num_crops=crops, symmetric=symmetric)
    )
    losses["loss"].backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.group_head.weight.grad.abs().sum() > 0
    assert model.instance_head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert not any("group" in name for name, _ in model.momentum_encoder.named_parameters())


def test_update_state_ema_exact_and_queue_advances_once() -> None:
    model = make_moco(cld=True, num_crops=3, ema_momentum=0.9)
    batch = first_batch(3)
    losses, pending = model.compute_loss(batch, 0)
    keys = pending.keys
    losses["loss"].backward()
    key_before = [p.clone() for p in model.momentum_encoder.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    queue_before = model.queue.queue.clone()
    model.update_state(pending)
    online = [*model.backbone.parameters(), *model.instance_head.parameters()]
    for k, before, q in zip(model.momentum_encoder.parameters(), key_before, online, strict=True):
        assert torch.equal(k, before.mul(0.9).add(q, alpha=0.1))  # bitwise: same op order
    assert int(model.queue.ptr) == 8 and int(model.ema_steps) == 1
    assert torch.equal(model.queue.queue[:8], keys)
    assert torch.equal(model.queue.queue[8:], queue_before[8:])


def test_configuration_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="method.num_crops"):
        make_moco(num_crops=4)
    with pytest.raises(ValueError, match="method.queue_size"):
        make_moco(queue_size=0)
    with pytest.raises(ValueError, match="method.temperature"):
        make_moco(temperature=0.0)
    with pytest.raises(ValueError, match="method.ema_momentum"):
        make_moco(ema_momentum=1.5)
    with pytest.raises(ValueError, match="method.symmetric"):
        make_moco(num_crops=3, symmetric=True)
    with pytest.raises(ValueError, match="data.num_views=3"):
        make_moco(num_crops=3).compute_loss(first_batch(2), 0)


def test_training_queue_pointer_and_checkpoint_roundtrip(tmp_path) -> None:
    model = make_moco(cld=True, num_crops=3, queue_size=20)  # 8 keys/step: wraps at step 3
    loader = DataLoader(TinyViews(n=32, num_views=3), batch_size=8, shuffle=False)
    trainer = quiet_trainer(tmp_path, max_steps=3)
    key_init = model.momentum_encoder["backbone"].conv1.weight.clone()
    trainer.fit(model, loader)
    assert int(model.queue.ptr) == (3 * 8) % 20 and int(model.ema_steps) == 3
    assert not torch.equal(model.momentum_encoder["backbone"].conv1.weight, key_init)
    assert (
        "cld/loss" in trainer.callback_metrics and "train/instance_acc" in trainer.callback_metrics
    )
    path = tmp_path / "moco.ckpt"
    trainer.save_checkpoint(path)
    fresh = make_moco(cld=True, num_crops=3, queue_size=20, seed=5)
    assert not torch.equal(fresh.queue.queue, model.queue.queue)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert {"queue.queue", "queue.ptr", "ema_steps"} <= set(state)
    assert any(k.startswith("momentum_encoder.backbone.") for k in state)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue.queue, model.queue.queue)
    assert int(fresh.queue.ptr) == int(model.queue.ptr)
    for a, b in zip(
        fresh.momentum_encoder.state_dict().values(),
        model.momentum_encoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("crops,cld", [(2, False), (2, True), (3, True)])
def test_fast_dev_run(crops: int, cld: bool, tmp_path) -> None:
    model = make_moco(cld=cld, num_crops=crops)
    loader = DataLoader(TinyViews(n=16, num_views=crops), batch_size=8)
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, loader)
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    assert int(model.queue.ptr) == 8
    assert ("cld/loss_step" in trainer.callback_metrics) == cld


def test_ema_cosine_momentum_follows_training_steps(tmp_path) -> None:
    model = make_moco(cld=False, ema_cosine=True, ema_momentum=0.9)
    assert model.current_ema_momentum() == 0.9  # outside a Trainer: constant
    seen: list[float] = []
    original = model.momentum_update

    def record() -> float:
        seen.append(model.current_ema_momentum())
        return original()

    model.momentum_update = record  # type: ignore[method-assign]
    loader = DataLoader(TinyViews(n=32), batch_size=8)
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader)
    import math

    assert seen == pytest.approx([1 - 0.1 * (math.cos(math.pi * s / 4) + 1) / 2 for s in range(4)])


def test_sync_batchnorm_is_the_trainers_and_covers_the_key_encoder() -> None:
    """One SyncBN switch: ``trainer.sync_batchnorm`` (Lightning's TorchSyncBatchNorm plugin)
    converts both encoders; the method has no ``sync_bn`` of its own."""
    from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm

    from cld_lightning.app.config_check import ConfigError, check_target_keys

    model = TorchSyncBatchNorm().apply(make_moco(cld=False))
    assert isinstance(model.backbone.bn1, torch.nn.SyncBatchNorm)
    assert isinstance(model.momentum_encoder["backbone"].bn1, torch.nn.SyncBatchNorm)
    with pytest.raises(TypeError, match="sync_bn"):
        make_moco(cld=False, sync_bn=True)
    node = OmegaConf.create({"_target_": "cld_lightning.methods.MoCo", "sync_bn": True})
    with pytest.raises(ConfigError, match=r"method\.sync_bn.*trainer\.sync_batchnorm"):
        check_target_keys(node, "method")


# ------------------------------------------------------------------ two gloo processes
def _dist_shuffle_and_queue(rank: int, world: int) -> None:
    from cld_lightning.modules import FeatureQueue, batch_shuffle, batch_unshuffle

    torch.manual_seed(100 + rank)
    x = torch.arange(4.0).view(4, 1) + 10 * rank  # rank r holds 10r .. 10r+3
    shuffled, unshuffle = batch_shuffle(x)
    assert unshuffle is not None and shuffled.shape == x.shape
    everything = torch.cat([torch.arange(4.0) + 10 * r for r in range(world)])
    assert set(shuffled.view(-1).tolist()) <= set(everything.tolist())
    assert torch.equal(batch_unshuffle(shuffled * 2, unshuffle), x * 2)  # own samples, in order
    queue = FeatureQueue(12, 1, gather_distributed=True)
    queue.enqueue(x)
    assert int(queue.ptr) == 8
    assert queue.queue[:8].view(-1).tolist() == everything.tolist()


def test_shuffle_bn_and_gathered_enqueue_on_two_processes() -> None:
    from tests.distributed.helpers import spawn

    spawn(_dist_shuffle_and_queue, world=2)


class _CheckRanksAgree(pl.Callback):
    """After training, every rank must hold the same queue, pointer and key encoder."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        import torch.distributed as dist

        assert dist.is_initialized() and dist.get_world_size() == 2
        # parameters and the queue (BN running statistics are per-rank, as in DDP generally)
        state = {
            k: v
            for k, v in pl_module.state_dict().items()
            if k.startswith(("queue.", "momentum_encoder.", "backbone."))
            and "running_" not in k
            and v.is_floating_point()
        }
        for name, value in state.items():
            gathered = [torch.empty_like(value) for _ in range(2)]
            dist.all_gather(gathered, value.contiguous())
            assert torch.equal(gathered[0], gathered[1]), f"ranks disagree on {name}"
        # 2 steps x 8 keys x 2 processes were enqueued once per step
        assert int(pl_module.queue.ptr) == (2 * 8 * 2) % pl_module.queue.size


def test_lightning_ddp_two_processes_keep_queue_and_key_encoder_in_sync(tmp_path) -> None:
    torch.manual_seed(0)
    model = MoCo(
        MLPBackbone(3 * 8 * 8),
        {"num_clusters": 3, "out_dim": 8},
        embed_dim=8,
        queue_size=40,
        num_crops=2,
        warmup_epochs=0,
        num_classes=3,
        knn_k=5,
    )
    trainer = quiet_trainer(
        tmp_path,
        max_steps=2,
        devices=2,
        strategy="ddp_spawn",
        callbacks=[_CheckRanksAgree()],
        limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(TinyViews(n=32, size=8), batch_size=8, drop_last=True))
