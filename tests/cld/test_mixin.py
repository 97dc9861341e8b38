"""CLDMixin on a user's own toy LightningModule, in both Lightning namespaces."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cld_lightning import CLDConfig, CLDMixin
from cld_lightning.cld import cross_level_loss

NAMESPACES = ["pytorch_lightning", "lightning.pytorch"]


def make_module(ns: str, weight: float = 0.5):
    L = importlib.import_module(ns)

    class ToySSL(CLDMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
            self.head = nn.Linear(8, 4)
            self.init_cld(8, CLDConfig(num_clusters=3, temperature=0.2, weight=weight))
            self.recorded: list[tuple[float, float]] = []

        def base_loss(self, f1, f2):
            z1, z2 = F.normalize(self.head(f1), dim=1), F.normalize(self.head(f2), dim=1)
            return -(z1 * z2).sum(1).mean()

        def training_step(self, batch, batch_idx):
            x, _ = batch
            x1, x2 = x + 0.05 * torch.randn_like(x), x + 0.05 * torch.randn_like(x)
            f1, f2 = self.backbone(x1), self.backbone(x2)
            base = self.base_loss(f1, f2)
            total = base + self.cld_loss(f1, f2)
            self.recorded.append((base.item(), total.item()))
            return total

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return L, ToySSL()


@pytest.mark.parametrize("ns", NAMESPACES)
def test_cld_loss_is_exactly_weight_times_lcld(ns: str) -> None:
    _, model = make_module(ns, weight=0.5)
    torch.manual_seed(0)
    f1, f2 = torch.randn(12, 8), torch.randn(12, 8)
    added = model.cld_loss(f1, f2)
    g1 = F.normalize(model.group_head(f1), dim=1)
    g2 = F.normalize(model.group_head(f2), dim=1)
    expected = 0.5 * cross_level_loss(g1, g2, 3, 0.2, 5)
    assert abs(added.item() - expected.item()) < 1e-6


@pytest.mark.parametrize("ns", NAMESPACES)
def test_gradients_reach_backbone_and_group_head(ns: str) -> None:
    _, model = make_module(ns)
    x = torch.randn(12, 6)
    model.cld_loss(model.backbone(x), model.backbone(x + 0.1)).backward()
    assert model.group_head.weight.grad is not None and model.group_head.weight.grad.abs().sum() > 0
    first = model.backbone[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert model.head.weight.grad is None  # the instance head is not touched by L_CLD


@pytest.mark.parametrize("ns", NAMESPACES)
def test_trains_in_namespace_and_group_head_in_checkpoint(ns: str, tmp_path) -> None:
    L, model = make_module(ns, weight=0.5)
    data = DataLoader(TensorDataset(torch.randn(48, 6), torch.zeros(48)), batch_size=12)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    before = model.group_head.weight.detach().clone()
    trainer.fit(model, data)
    assert len(model.recorded) == 4
    base, total = model.recorded[0]
    assert total > base  # λ·L_CLD > 0 was added
    assert not torch.equal(before, model.group_head.weight)  # the optimiser saw the head
    assert "cld/loss" in trainer.callback_metrics and "cld/group_acc" in trainer.callback_metrics
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert "group_head.weight" in state
    torch.testing.assert_close(state["group_head.weight"], model.group_head.weight.detach())


def test_disabled_mixin_has_no_head() -> None:
    import pytorch_lightning as pl

    class Off(CLDMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.init_cld(8)  # None = off

    m = Off()
    assert not m.cld_enabled and m.group_head is None
    assert not any("group_head" in k for k in m.state_dict())


def test_mixin_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="cld.weight"):
        make_module("pytorch_lightning", weight=-1.0)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_add_cld_is_instance_plus_weight_times_lcld(ns: str) -> None:
    """The helper the built-in methods use: ``loss = instance_loss + λ·L_CLD`` on the views."""
    _, model = make_module(ns, weight=0.5)
    torch.manual_seed(0)
    f1, f2 = torch.randn(12, 8), torch.randn(12, 8)
    inst = torch.tensor(1.25)
    losses = model.add_cld({"instance_loss": inst}, (f1, f2))
    g1 = F.normalize(model.group_head(f1), dim=1)
    g2 = F.normalize(model.group_head(f2), dim=1)
    l_cld = cross_level_loss(g1, g2, 3, 0.2, 5)
    assert losses["cld_weighted"].item() == pytest.approx(0.5 * l_cld.item(), abs=1e-6)
    assert losses["loss"].item() == pytest.approx(1.25 + 0.5 * l_cld.item(), abs=1e-6)
    with pytest.raises(RuntimeError, match="no CLD views"):
        model.add_cld({"instance_loss": inst}, None)


def test_add_cld_off_is_the_instance_loss() -> None:
    class Off(CLDMixin, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.init_cld(8, {"enabled": False})

    losses = Off().add_cld({"instance_loss": torch.tensor(0.75)}, None)
    assert losses == {"instance_loss": torch.tensor(0.75), "loss": torch.tensor(0.75)}


def test_none_means_off_in_the_mixin_and_in_the_methods() -> None:
    """One meaning of ``None``: CLD off, in ``init_cld`` as in ``SSLMethod(cld=None)`` and
    ``CLDConfig.from_any``; the defaults need an explicit ``CLDConfig()``."""
    from cld_lightning.methods import NPID
    from tests.helpers import MLPBackbone

    class Toy(CLDMixin, nn.Module):
        def __init__(self, *args, **kw) -> None:
            super().__init__()
            self.init_cld(8, *args, **kw)

    assert not Toy().cld_enabled and not Toy(None).cld_enabled
    assert not CLDConfig.from_any(None).enabled
    assert not NPID(MLPBackbone(), 8, None).cld_enabled
    assert not NPID(MLPBackbone(), 8).cld_enabled
    on = Toy(CLDConfig())
    assert on.cld_enabled and on.cld_config == CLDConfig() and on.cld_config.num_clusters == 128
    assert NPID(MLPBackbone(), 8, CLDConfig()).cld_config == CLDConfig()
    tuned = Toy({"num_clusters": 3}, weight=0.5)  # keyword settings win over a given config
    assert tuned.cld_enabled and (tuned.cld_config.num_clusters, tuned.cld_weight) == (3, 0.5)


def test_init_cld_three_forms_settings_config_none() -> None:
    """Keyword settings = on with them (the README form); a ``CLDConfig`` = as given; ``None`` /
    nothing = off. Unknown or invalid settings name the key."""

    class Toy(CLDMixin, nn.Module):
        def __init__(self, *args, **kw) -> None:
            super().__init__()
            self.init_cld(8, *args, **kw)

    on = Toy(num_clusters=3, temperature=0.5, weight=0.25)  # the documented mixin form
    assert on.cld_enabled and on.cld_config.enabled
    assert (on.cld_config.num_clusters, on.cld_config.temperature, on.cld_weight) == (3, 0.5, 0.25)
    assert on.cld_config.out_dim == CLDConfig().out_dim  # the rest at the defaults
    assert isinstance(on.group_head, nn.Linear) and on.group_head.weight.shape == (128, 8)
    f1, f2 = torch.randn(12, 8), torch.randn(12, 8)
    g1 = F.normalize(on.group_head(f1), dim=1)
    g2 = F.normalize(on.group_head(f2), dim=1)
    assert on.cld_loss(f1, f2).item() == pytest.approx(
        0.25 * cross_level_loss(g1, g2, 3, 0.5, 5).item(), abs=1e-6
    )
    given = Toy(CLDConfig(num_clusters=5, weight=2.0, head="mlp", hidden_dim=16))
    assert given.cld_config == CLDConfig(num_clusters=5, weight=2.0, head="mlp", hidden_dim=16)
    assert given.cld_weight == 2.0 and given.group_head is not None
    assert given.group_head[0].out_features == 16  # the mlp head's hidden layer
    for off in (Toy(), Toy(None), Toy(enabled=False, num_clusters=4)):
        assert not off.cld_enabled and off.group_head is None and not off.cld_config.enabled
        assert not any("group_head" in k for k in off.state_dict())
    with pytest.raises(ValueError, match=r"cld\.num_cluster\b"):
        Toy(num_cluster=3)  # a typo: refused with its name
    with pytest.raises(ValueError, match=r"cld\.num_clusters \(k\) must be >= 1, got 0"):
        Toy(num_clusters=0)
    with pytest.raises(ValueError, match=r"cld\.temperature must be a number, got '0.2'"):
        Toy(temperature="0.2")
    with pytest.raises(ValueError, match=r"cld\.num_clusters must be an integer, got 3.5"):
        Toy(num_clusters=3.5)
