"""Instance losses and state modules vs hand-written references: InfoNCE with a queue, BYOL's
regression, the jigsaw bookkeeping, the FIFO queue, EMA updates and schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cld_lightning.losses import (
    byol_regression_loss,
    infonce_logits,
    infonce_loss,
    jigsaw_instance_loss,
    jigsaw_patches,
    jigsaw_permutation,
    symmetric_byol_loss,
    unshuffle_permutation,
)
from cld_lightning.modules import (
    FeatureQueue,
    batch_shuffle,
    batch_unshuffle,
    cosine_momentum,
    ema_step,
    ema_update,
    frozen_copy,
    scheduled_momentum,
)


def unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


# ------------------------------------------------------------------ InfoNCE
def test_infonce_value_and_gradient_match_loop_reference() -> None:
    q = unit(4, 6, seed=0).requires_grad_()
    k = unit(4, 6, seed=1)
    queue = unit(7, 6, seed=2)
    tau = 0.07
    loss = infonce_loss(q, k, queue, tau)
    manual, qd = 0.0, q.detach()
    for i in range(4):
        pos = math.exp(float(qd[i] @ k[i]) / tau)
        neg = sum(math.exp(float(qd[i] @ queue[j]) / tau) for j in range(7))
        manual += -math.log(pos / (pos + neg))
    assert abs(loss.item() - manual / 4) < 1e-10
    loss.backward()
    # d/dq_i = (Σ_c p_c·v_c - k_i) / (τ·B) with v = [k_i, queue...]
    grads = []
    for i in range(4):
        cands = torch.cat([k[i : i + 1], queue])
        p = torch.softmax(cands @ q[i].detach() / tau, 0)
        grads.append((p @ cands - k[i]) / tau / 4)
    torch.testing.assert_close(q.grad, torch.stack(grads))


def test_infonce_logits_layout_and_errors() -> None:
    q, k, queue = unit(3, 5, seed=3), unit(3, 5, seed=4), unit(2, 5, seed=5)
    logits = infonce_logits(q, k, queue, 0.5)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.5)
    torch.testing.assert_close(logits[:, 1:], q @ queue.t() / 0.5)
    # an empty queue leaves only the positive: loss 0
    assert infonce_loss(q, k, queue[:0], 0.1).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="temperature"):
        infonce_loss(q, k, queue, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        infonce_loss(q, k[:2], queue, 0.1)


# ------------------------------------------------------------------ BYOL
def test_byol_regression_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 4, generator=g, dtype=torch.float64).requires_grad_()
    z = torch.randn(5, 4, generator=g, dtype=torch.float64)
    loss = byol_regression_loss(p, z)
    pd = p.detach()
    manual = (
        sum(float(((pd[i] / pd[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(5)) / 5
    )
    assert abs(loss.item() - manual) < 1e-12
    loss.backward()
    # d/dp (2 - 2 p·ẑ/|p|) = -2/|p| (ẑ - (p̂·ẑ) p̂) / B
    ph, zh = pd / pd.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True)
    expected = -2 / pd.norm(dim=1, keepdim=True) * (zh - (ph * zh).sum(1, keepdim=True) * ph) / 5
    torch.testing.assert_close(p.grad, expected)


def test_symmetric_byol_is_sum_of_cross_terms() -> None:
    p1, p2, z1, z2 = (unit(3, 4, seed=s) for s in range(4))
    expected = (2 - 2 * (p1 * z2).sum(1)).mean() + (2 - 2 * (p2 * z1).sum(1)).mean()
    torch.testing.assert_close(symmetric_byol_loss(p1, p2, z1, z2), expected)
    assert byol_regression_loss(p1, p1).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_regression_loss(p1, -p1).item() == pytest.approx(4.0)


# ------------------------------------------------------------------ jigsaw
def test_jigsaw_patches_shapes_and_contents() -> None:
    x = torch.arange(2 * 1 * 9 * 9, dtype=torch.float32).view(2, 1, 9, 9)
    patches = jigsaw_patches(x, grid=3)
    assert patches.shape == (18, 1, 3, 3)
    for b in range(2):
        for r in range(3):
            for c in range(3):
                expected = x[b, :, 3 * r : 3 * r + 3, 3 * c : 3 * c + 3]
                assert torch.equal(patches[b * 9 + r * 3 + c], expected)
    # 32x32 -> cells of 10 (remainder dropped); jitter crops stay inside their cell
    y = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)
    jit = jigsaw_patches(y, 3, patch_size=7, generator=torch.Generator().manual_seed(0))
    assert jit.shape == (9, 1, 7, 7)
    for i, patch in enumerate(jit):
        r, c = divmod(i, 3)
        rows, cols = patch[0, :, 0] // 32, patch[0, 0, :] % 32
        assert rows.min() >= 10 * r and rows.max() < 10 * r + 10
        assert cols.min() >= 10 * c and cols.max() < 10 * c + 10
    with pytest.raises(ValueError, match="jigsaw_patch_size"):
        jigsaw_patches(y, 3, patch_size=11)
    with pytest.raises(ValueError, match="jigsaw_grid"):
        jigsaw_patches(y[:, :, :2, :2], 3)


def test_jigsaw_permutation_stays_within_each_image_and_inverts() -> None:
    perm = jigsaw_permutation(4, 9, generator=torch.Generator().manual_seed(1))
    assert perm.shape == (36,)
    for b in range(4):
        block = perm[b * 9 : (b + 1) * 9]
        assert sorted(block.tolist()) == list(range(b * 9, b * 9 + 9))
    assert not torch.equal(perm, torch.arange(36))  # actually shuffled
    data = torch.randn(36, 5)
    assert torch.equal(data[perm][unshuffle_permutation(perm)], data)


def test_jigsaw_instance_loss_combination_value_and_gradient() -> None:
    q, qj = unit(4, 6, seed=10).requires_grad_(), unit(4, 6, seed=11).requires_grad_()
    k, queue = unit(4, 6, seed=12), unit(5, 6, seed=13)
    moco = infonce_loss(q, k, queue, 0.2)
    total, jig = jigsaw_instance_loss(moco, qj, k, queue, 0.2, beta=0.3)
    # InfoNCE of q_jig written out: positive logit first, then the queue, over τ
    logits = torch.cat([(qj * k).sum(1, keepdim=True), qj @ queue.t()], dim=1) / 0.2
    expected_jig = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    torch.testing.assert_close(jig, expected_jig)
    torch.testing.assert_close(total, 0.7 * moco + 0.3 * expected_jig)
    total.backward()
    ref_q = q.detach().clone().requires_grad_()
    (0.7 * infonce_loss(ref_q, k, queue, 0.2)).backward()
    torch.testing.assert_close(q.grad, ref_q.grad)
    with pytest.raises(ValueError, match="jigsaw_weight"):
        jigsaw_instance_loss(moco, qj, k, queue, 0.2, beta=1.5)


# ------------------------------------------------------------------ queue
def test_queue_fifo_with_wraparound_exact_contents() -> None:
    queue = FeatureQueue(size=5, dim=2, gather_distributed=False)
    init = queue.queue.clone()
    torch.testing.assert_close(init.norm(dim=1), torch.ones(5))
    keys = [torch.full((3, 2), float(i + 1)) for i in range(3)]
    queue.enqueue(keys[0])  # rows 0,1,2
    assert int(queue.ptr) == 3
    assert torch.equal(queue.queue[:3], keys[0]) and torch.equal(queue.queue[3:], init[3:])
    queue.enqueue(keys[1])  # rows 3,4 then wrap to 0
    assert int(queue.ptr) == 1
    expected = torch.tensor([[2.0, 2], [1, 1], [1, 1], [2, 2], [2, 2]])
    assert torch.equal(queue.queue, expected)
    queue.enqueue(keys[2])  # rows 1,2,3
    assert int(queue.ptr) == 4
    expected = torch.tensor([[2.0, 2], [3, 3], [3, 3], [3, 3], [2, 2]])
    assert torch.equal(queue.queue, expected)


def test_queue_batch_larger_than_queue_keeps_newest() -> None:
    queue = FeatureQueue(size=4, dim=1, gather_distributed=False)
    queue.enqueue(torch.zeros(1, 1))  # ptr 1
    keys = torch.arange(1.0, 7.0).view(6, 1)  # rows 1,2,3,0,1,2 -> last 4 survive
    queue.enqueue(keys)
    assert int(queue.ptr) == (1 + 6) % 4
    assert queue.queue.view(-1).tolist() == [4.0, 5.0, 6.0, 3.0]
    with pytest.raises(ValueError, match="queue_size"):
        FeatureQueue(0, 4)
    with pytest.raises(ValueError, match=r"\[B, 1\]"):
        queue.enqueue(torch.zeros(2, 3))


def test_queue_buffers_are_persistent() -> None:
    queue = FeatureQueue(3, 2)
    assert set(queue.state_dict()) == {"queue", "ptr"}


# ------------------------------------------------------------------ EMA
def test_ema_update_exact_params_and_own_buffers() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.fill_(5.0)
    old = [p.clone() for p in target.parameters()]
    ema_update(online, target, 0.9)  # pairs are (online, target) everywhere
    for t, o, before in zip(target.parameters(), online.parameters(), old, strict=True):
        torch.testing.assert_close(t, 0.9 * before + 0.1 * o, rtol=0, atol=1e-7)
    assert torch.equal(target[1].running_mean, torch.zeros(4))  # BN statistics are the target's
    ema_update(online, target, 0.0)
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(t, o)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(online, target, 1.5)
    with pytest.raises(ValueError, match=r"swapped.*\(online, target\)"):
        ema_update(target, online, 0.9)  # the frozen copy given as the online network


def test_cosine_momentum_schedule_values() -> None:
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 25, 100) == pytest.approx(
        1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2
    )
    assert cosine_momentum(0.99, 7, None) == 0.99  # no total: constant


def test_scheduled_momentum_constant_or_cosine() -> None:
    assert scheduled_momentum(0.9, 2, 4, cosine=False) == 0.9
    assert scheduled_momentum(0.9, 2, 4, cosine=True) == pytest.approx(0.95)
    assert scheduled_momentum(0.9, 2, None, cosine=True) == 0.9  # outside a Trainer


def test_ema_step_updates_every_pair_and_counts() -> None:
    torch.manual_seed(0)
    online = [nn.Linear(3, 2), nn.Linear(2, 2)]
    targets = [frozen_copy(m) for m in online]
    with torch.no_grad():
        for m in online:
            for p in m.parameters():
                p.add_(1.0)
    before = [[p.clone() for p in t.parameters()] for t in targets]
    steps = torch.zeros((), dtype=torch.long)
    assert ema_step(zip(online, targets, strict=True), 0.75, steps) == 0.75
    assert int(steps) == 1
    for t, o, old in zip(targets, online, before, strict=True):
        for pt, po, pb in zip(t.parameters(), o.parameters(), old, strict=True):
            torch.testing.assert_close(pt, 0.75 * pb + 0.25 * po, rtol=0, atol=1e-7)


def test_shuffle_bn_is_identity_on_one_process() -> None:
    x = torch.randn(6, 3)
    shuffled, unshuffle = batch_shuffle(x)
    assert unshuffle is None and torch.equal(shuffled, x)
    assert torch.equal(batch_unshuffle(x * 2, None), x * 2)
