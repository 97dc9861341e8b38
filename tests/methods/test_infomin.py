"""InfoMin(+CLD): jigsaw branch shapes/permutation, (1-β)·L_MoCo + β·L_jigsaw (+ exactly
λ·L_CLD), keys enqueued once per step, fast_dev_run with CLD on/off."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from cld_lightning.losses import infonce_loss, jigsaw_patches
from cld_lightning.methods import InfoMin
from tests.helpers import (
    TinyViews,
    assert_cld_adds_exactly_lambda_lcld,
    first_batch,
    make_moco,
    quiet_trainer,
)


def make_infomin(cld: bool = True, seed: int = 0, **kw: Any) -> InfoMin:
    return make_moco(cld, seed, method=InfoMin, **kw)


def test_jigsaw_embedding_shapes_and_permutation_bookkeeping() -> None:
    model = make_infomin(cld=False, jigsaw_patch_size=6)  # whole 6-px cells: no jitter
    x = first_batch(1, batch_size=4, size=18)[0][0]
    seen: dict[str, torch.Tensor] = {}
    hook = model.backbone.register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0]))
    torch.manual_seed(3)
    q_jig, perm = model.jigsaw_embedding(x)
    hook.remove()
    assert q_jig.shape == (4, 128) and perm.shape == (36,)
    torch.testing.assert_close(q_jig.norm(dim=1), torch.ones(4))
    patches = jigsaw_patches(x, 3)
    assert seen["in"].shape == (36, 3, 6, 6)  # 9 patches of 6x6 per image went through the backbone
    assert torch.equal(seen["in"], patches[perm])
    for b in range(4):  # each image's patches stay together, shuffled among themselves
        assert sorted(perm[9 * b : 9 * b + 9].tolist()) == list(range(9 * b, 9 * b + 9))
    # the head sees the patch embeddings in the shuffled order: recompute by hand
    feats = model.backbone(patches[perm])
    y = model.jigsaw_head.patch_head(feats).reshape(4, -1)
    expected = torch.nn.functional.normalize(model.jigsaw_head.aggregate(y), dim=1)
    torch.testing.assert_close(q_jig, expected)


def test_instance_loss_is_beta_combination_of_moco_and_jigsaw() -> None:
    model = make_infomin(cld=False, jigsaw_weight=0.3)
    batch = first_batch(2, size=18)
    v1, v2 = batch[0]
    torch.manual_seed(7)
    losses, _ = model.compute_loss(batch, 0)
    k = model.key_embedding(v2)
    moco = infonce_loss(model.embed(v1), k, model.queue.queue, model.temperature)
    torch.manual_seed(7)
    q_jig, _ = model.jigsaw_embedding(v1)
    jig = infonce_loss(q_jig, k, model.queue.queue, model.temperature)
    torch.testing.assert_close(losses["moco_loss"], moco)
    torch.testing.assert_close(losses["jigsaw_loss"], jig)
    torch.testing.assert_close(losses["loss"], 0.7 * moco + 0.3 * jig)
    losses["loss"].backward()
    assert model.jigsaw_head.aggregate.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.temperature == 0.15  # InfoMin's default τ


@pytest.mark.parametrize("crops", [2, 3])
def test_cld_adds_exactly_lambda_times_lcld(crops: int) -> None:
    model = make_infomin(cld=True, num_crops=crops)
    assert_cld_adds_exactly_lambda_lcld(
        model, first_batch(crops, size=18), (0, 1), lambda: make_infomin(cld=False, num_crops=crops)
    )


def test_queue_pointer_advances_by_one_batch_per_step(tmp_path) -> None:
    model = make_infomin(cld=True, queue_size=64)
    pointers: list[int] = []
    original = model.update_state

    def record(pending: Any) -> None:
        original(pending)
        pointers.append(int(model.queue.ptr))

    model.update_state = record  # type: ignore[method-assign]
    loader = DataLoader(TinyViews(n=24, size=18), batch_size=8)
    quiet_trainer(tmp_path, max_epochs=1).fit(model, loader)
    assert pointers == [8, 16, 24]  # once per step, not twice (the reference's bug)


def test_configuration_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="method.jigsaw_weight"):
        make_infomin(jigsaw_weight=1.5)
    with pytest.raises(ValueError, match="method.jigsaw_view"):
        make_infomin(jigsaw_view=5)
    with pytest.raises(ValueError, match="data.num_views=3"):
        make_infomin(jigsaw_view=2).compute_loss(first_batch(2), 0)


@pytest.mark.parametrize("cld", [False, True])
def test_fast_dev_run(cld: bool, tmp_path) -> None:
    model = make_infomin(cld=cld)
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, DataLoader(TinyViews(n=16, size=18), batch_size=8))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_step"]) and "train/jigsaw_loss_step" in metrics
    assert int(model.queue.ptr) == 8
    assert ("cld/loss_step" in metrics) == cld


@pytest.mark.parametrize("crops", [2, 3])
def test_beta_zero_is_moco_without_a_jigsaw_head(crops: int) -> None:
    # β = 0: the loss is MoCo's, mean over the query crops of InfoNCE(q_i, k, queue) with the last
    # crop as the key, recomputed here from the embeddings (not by calling MoCo's own code).
    model = make_infomin(cld=False, jigsaw_weight=0.0, num_crops=crops)
    assert model.jigsaw_head is None
    batch = first_batch(crops, size=18)
    views = batch[0]
    queue = model.queue.queue.clone()
    losses, _ = model.compute_loss(batch, 0)
    k = model.key_embedding(views[crops - 1])
    expected = torch.stack(
        [infonce_loss(model.embed(v), k, queue, 0.15) for v in views[: crops - 1]]
    ).mean()
    torch.testing.assert_close(losses["loss"], expected)
    assert "jigsaw_loss" not in losses
