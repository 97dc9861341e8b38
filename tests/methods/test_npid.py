"""NPID(+CLD): memory-bank update rule, losses vs references, checkpointing, kNN leaves state alone."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cld_lightning.cld import cross_level_loss
from cld_lightning.losses import npid_nce_loss, npid_softmax_loss
from cld_lightning.modules import MemoryBank
from tests.helpers import TinyViews, make_resnet_npid, quiet_trainer


class EvalSet(Dataset):
    def __init__(self, base: TinyViews) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base.x[i], self.base.y[i], i


MEMORY_ROWS, TEST_ROWS = range(16), range(16, 24)


def memory_and_test_loaders(data: TinyViews) -> list[DataLoader]:
    """Validation loaders ``[memory set, test set]`` over *disjoint* images (rows 0-15, 16-23), so
    a model that mixed the two up would report a different kNN accuracy."""
    return [
        DataLoader(torch.utils.data.Subset(EvalSet(data), MEMORY_ROWS), batch_size=8),
        DataLoader(torch.utils.data.Subset(EvalSet(data), TEST_ROWS), batch_size=8),
    ]


def test_bank_init_range_and_update_rule() -> None:
    bank = MemoryBank(10, 12, momentum=0.5, gather_distributed=False)
    s = 1 / math.sqrt(12 / 3)
    assert bank.bank.abs().max() <= s and bank.bank.shape == (10, 12)
    old = bank.bank.clone()
    z = F.normalize(torch.randn(3, 12), dim=1)
    idx = torch.tensor([7, 2, 4])
    bank.update(idx, z)
    expected = F.normalize(0.5 * old[idx] + 0.5 * z, dim=1)
    torch.testing.assert_close(bank.bank[idx], expected)
    untouched = torch.tensor([0, 1, 3, 5, 6, 8, 9])
    assert torch.equal(bank.bank[untouched], old[untouched])
    with pytest.raises(IndexError, match="out of range"):
        bank.update(torch.tensor([10]), z[:1])


def test_softmax_loss_matches_manual() -> None:
    torch.manual_seed(1)
    z = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1).requires_grad_()
    bank = F.normalize(torch.randn(10, 8, dtype=torch.float64), dim=1)
    idx = torch.tensor([3, 0, 9, 5])
    loss = npid_softmax_loss(z, bank, idx, 0.1)
    manual = 0.0
    for i in range(4):
        logits = [float(z[i].detach() @ bank[j]) / 0.1 for j in range(10)]
        manual += -logits[idx[i]] + math.log(sum(math.exp(v) for v in logits))
    assert abs(loss.item() - manual / 4) < 1e-10
    loss.backward()
    p = torch.softmax(z.detach() @ bank.t() / 0.1, 1)
    grad = (p @ bank - bank[idx]) / 0.1 / 4
    torch.testing.assert_close(z.grad, grad)


def test_nce_loss_matches_manual() -> None:
    torch.manual_seed(2)
    z = F.normalize(torch.randn(2, 4, dtype=torch.float64), dim=1)
    bank = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1)
    idx = torch.tensor([1, 4])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 6, (2, 3), generator=torch.Generator().manual_seed(0))
    loss = npid_nce_loss(z, bank, idx, 0.5, 3, 2.0, generator=gen)
    kpn = 3 / 6
    total = 0.0
    for b in range(2):
        p_pos = math.exp(float(z[b] @ bank[idx[b]]) / 0.5) / 2.0
        total += math.log(p_pos / (p_pos + kpn + 1e-7))
        for j in noise[b]:
            p = math.exp(float(z[b] @ bank[j]) / 0.5) / 2.0
            total += math.log(kpn / (p + kpn + 1e-7))
    assert abs(loss.item() + total / 2) < 1e-9


def test_compute_loss_is_mean_view_loss_plus_lambda_cld() -> None:
    model = make_resnet_npid()
    model.cld_weight = 0.7
    views, y, idx = next(iter(DataLoader(TinyViews(24, noise=0.05), batch_size=8)))
    losses, pending = model.compute_loss((views, y, idx), 0)
    assert torch.equal(pending.index, idx) and len(pending.embeddings) == 2  # bank rows per view
    feats = [model.features(v) for v in views]
    z = [F.normalize(model.instance_head(f), dim=1) for f in feats]
    inst = 0.5 * sum(npid_softmax_loss(zi, model.memory.bank, idx, 0.1) for zi in z)
    g1, g2 = (F.normalize(model.group_head(f), dim=1) for f in feats)
    cld = cross_level_loss(g1, g2, 4, 0.2, 5)
    torch.testing.assert_close(losses["instance_loss"], inst)
    torch.testing.assert_close(losses["loss"], inst + 0.7 * cld)
    losses["loss"].backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.group_head.weight.grad.abs().sum() > 0


def test_cld_requires_two_views() -> None:
    with pytest.raises(ValueError, match="num_views"):
        make_resnet_npid(cld=True, num_views=1)


def test_training_updates_bank_after_step_per_view(tmp_path) -> None:
    model = make_resnet_npid()
    data = TinyViews(24, noise=0.05)
    loader = DataLoader(data, batch_size=8, shuffle=False)
    views, y, idx = next(iter(loader))
    bank_before = model.memory.bank.clone()
    trainer = quiet_trainer(tmp_path, max_steps=1)
    with torch.no_grad():
        model.train()
        z1 = model.embed(views[0])
        z2 = model.embed(views[1])
    # BN in train mode above changed running stats only; reset for a clean comparison.
    model2 = make_resnet_npid()
    trainer.fit(model2, loader)
    m = F.normalize(0.5 * bank_before[idx] + 0.5 * z1, dim=1)
    m = F.normalize(0.5 * m + 0.5 * z2, dim=1)
    torch.testing.assert_close(model2.memory.bank[idx], m, atol=1e-5, rtol=0)
    others = torch.ones(len(data), dtype=torch.bool)
    others[idx] = False
    assert torch.equal(model2.memory.bank[others], bank_before[others])


def test_bank_persisted_and_untouched_by_knn(tmp_path) -> None:
    model = make_resnet_npid()
    data = TinyViews(24, noise=0.05)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=1.0)
    evals = memory_and_test_loaders(data)
    trainer.fit(model, DataLoader(data, batch_size=8), evals)
    assert "knn/top1" in trainer.callback_metrics
    bank = model.memory.bank.clone()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.validate(model, evals, verbose=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), f"validation changed {k}"
    path = tmp_path / "npid.ckpt"
    trainer.save_checkpoint(path)
    fresh = make_resnet_npid()
    assert not torch.equal(fresh.memory.bank, bank)
    fresh.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    assert torch.equal(fresh.memory.bank, bank)
    assert torch.equal(fresh.group_head.weight, model.group_head.weight)


def test_knn_top1_logged_matches_weighted_knn(tmp_path) -> None:
    from cld_lightning.eval import weighted_knn

    model = make_resnet_npid()
    data = TinyViews(24, noise=0.05)
    evals = memory_and_test_loaders(data)
    trainer = quiet_trainer(tmp_path, limit_val_batches=1.0)
    out = trainer.validate(model, evals, verbose=False)
    model.eval()
    with torch.no_grad():
        z = model.embed(data.x)
    mem, test = list(MEMORY_ROWS), list(TEST_ROWS)
    pred = weighted_knn(z[mem], data.y[mem], z[test], 3, k=5, temperature=0.1)
    expected = (pred == data.y[test]).float().mean().item() * 100
    swapped = weighted_knn(z[test], data.y[test], z[mem], 3, k=5, temperature=0.1)
    assert expected != (swapped == data.y[mem]).float().mean().item() * 100  # the test can tell
    assert abs(out[0]["knn/top1"] - expected) < 1e-4


def test_bank_init_embeddings_fills_rows_with_untrained_embeddings(tmp_path) -> None:
    data = TinyViews(24, noise=0.05)
    model = make_resnet_npid(cld=False, bank_init="embeddings")
    initial = make_resnet_npid(cld=False)  # same seed: the untrained weights of `model`
    eval_loader = DataLoader(EvalSet(data), batch_size=5, shuffle=True)  # order must not matter
    model.fill_bank(eval_loader)
    with torch.no_grad():
        initial.eval()
        expected = initial.embed(data.x)
    torch.testing.assert_close(model.memory.bank, expected, atol=1e-6, rtol=0)
    assert int(model.bank_filled) == 1
    reference = make_resnet_npid(cld=False)  # bank_init=random: the reference's uniform rows
    s = 1 / math.sqrt(128 / 3)
    assert reference.memory.bank.abs().max() <= s
    assert not torch.allclose(reference.memory.bank.norm(dim=1), torch.ones(24), atol=1e-3)
    with pytest.raises(ValueError, match="method.bank_init"):
        make_resnet_npid(bank_init="zeros")
    with pytest.raises(ValueError, match="yielded 5 rows"):
        make_resnet_npid(cld=False, bank_init="embeddings").fill_bank(
            DataLoader(torch.utils.data.Subset(EvalSet(data), range(5)), batch_size=5)
        )


def test_bank_init_embeddings_runs_once_at_train_start_from_the_datamodule(tmp_path) -> None:
    data = TinyViews(24, noise=0.05)

    class DM(pl.LightningDataModule):
        calls = 0

        def train_dataloader(self):
            return DataLoader(data, batch_size=8)

        def instance_loader(self):
            DM.calls += 1
            return DataLoader(EvalSet(data), batch_size=8)

    model = make_resnet_npid(cld=False, bank_init="embeddings", lr=1e-9)
    with torch.no_grad():
        model.eval()
        expected = model.embed(data.x)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(model, datamodule=DM())
    untouched = torch.arange(8, 24)  # rows of the second and third batch: not yet updated
    torch.testing.assert_close(model.memory.bank[untouched], expected[untouched], atol=1e-6, rtol=0)
    trainer2 = quiet_trainer(tmp_path, max_steps=2)
    trainer2.fit(model, datamodule=DM())  # bank_filled: a second fit does not refill
    assert DM.calls == 1
    plain = make_resnet_npid(cld=False, bank_init="embeddings")
    with pytest.raises(ValueError, match="instance_loader"):
        quiet_trainer(tmp_path, max_steps=1).fit(plain, DataLoader(data, batch_size=8))
