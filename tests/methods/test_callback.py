"""CLDCallback: λ warm-up schedule values, cluster-size statistics and the logged cld/* metrics,
skipped steps, no parameters, both Lightning namespaces."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cld_lightning import CLDCallback, CLDConfig, CLDMixin
from cld_lightning.cld.callback import callback_class, warmup_weight


def test_warmup_weight_values() -> None:
    assert warmup_weight(0.8, 0.0, 2.0) == 0.0
    assert warmup_weight(0.8, 0.5, 2.0) == pytest.approx(0.2)
    assert warmup_weight(0.8, 1.0, 2.0) == pytest.approx(0.4)
    assert warmup_weight(0.8, 2.0, 2.0) == pytest.approx(0.8)
    assert warmup_weight(0.8, 7.0, 2.0) == pytest.approx(0.8)
    assert warmup_weight(0.8, 0.0, 0.0) == 0.8  # no warm-up: constant λ
    assert warmup_weight(0.8, -1.0, 2.0) == 0.0


def make_toy(ns: str = "pytorch_lightning", skip_batch: int | None = None) -> Any:
    L = importlib.import_module(ns)

    class Toy(CLDMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
            self.init_cld(8, CLDConfig(num_clusters=5, temperature=0.2, weight=0.8))
            self.weights: list[float] = []
            self.losses: list[float] = []
            self.accs: list[float] = []
            self.sizes: list[torch.Tensor] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            f1, f2 = self.backbone(x), self.backbone(x + 0.1 * torch.randn_like(x))
            self.weights.append(self.cld_weight)
            loss = self.cld_loss(f1, f2)
            out = self.last_cld_output
            if batch_idx == skip_batch:
                return None  # e.g. a non-finite loss that SSLMethod skips
            self.losses.append(out.loss.item())
            self.accs.append(out.group_acc.item())
            self.sizes.append(torch.stack(out.cluster_sizes))
            return loss + 0.0 * F.normalize(f1, dim=1).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return L, Toy()


def fit(L: Any, model: Any, callback: Any, tmp_path, epochs: int = 2) -> Any:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(32, 6)), batch_size=8)  # 4 steps per epoch
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    return trainer


def test_lambda_warmup_schedule_in_training(tmp_path) -> None:
    L, model = make_toy()
    fit(L, model, CLDCallback(warmup_epochs=2), tmp_path)
    expected = [0.8 * min(1.0, (e + b / 4) / 2) for e in range(2) for b in range(4)]
    assert model.weights == pytest.approx(expected)
    # the config's warmup_epochs is used when the callback leaves it unset (None)
    L, model = make_toy()
    model.cld_config.warmup_epochs = 1.0
    fit(L, model, CLDCallback(), tmp_path, epochs=1)
    assert model.weights == pytest.approx([0.0, 0.2, 0.4, 0.6])


def test_logged_cld_metrics_and_epoch_cluster_statistics(tmp_path) -> None:
    L, model = make_toy()
    trainer = fit(L, model, CLDCallback(), tmp_path, epochs=1)
    m = trainer.callback_metrics
    assert m["cld/loss_epoch"].item() == pytest.approx(sum(model.losses) / 4, rel=1e-5)
    assert m["cld/group_acc_epoch"].item() == pytest.approx(sum(model.accs) / 4, rel=1e-5)
    sizes = torch.cat(model.sizes).float()  # [4 steps * 2 views, 5]
    assert sizes.sum(dim=1).eq(8).all()
    flat = sizes.flatten()
    assert m["cld/epoch_cluster_size_max"].item() == flat.max().item()
    assert m["cld/epoch_cluster_size_mean_nonempty"].item() == pytest.approx(
        flat[flat > 0].mean().item()
    )
    assert m["cld/epoch_empty_clusters"].item() == pytest.approx(
        (sizes == 0).sum(dim=1).float().mean().item()
    )
    assert m["cld/epoch_empty_cluster_frac"].item() == pytest.approx(
        (flat == 0).float().mean().item()
    )
    assert m["cld/weight"].item() == pytest.approx(0.8)


def test_cluster_size_max_epoch_value_is_the_largest_step_value(tmp_path) -> None:
    """``cld/cluster_size_max`` is reduced over the epoch with max (a mean of maxima is not one)."""
    L, model = make_toy()
    trainer = fit(L, model, CLDCallback(), tmp_path, epochs=1)
    per_step = torch.stack([s.max() for s in model.sizes]).float()  # 4 steps
    assert per_step.max() > per_step.mean()  # the two reductions differ on this run
    assert trainer.callback_metrics["cld/cluster_size_max_epoch"].item() == per_step.max().item()


def test_skipped_step_is_not_counted(tmp_path) -> None:
    L, model = make_toy(skip_batch=2)
    callback = CLDCallback()
    seen: list[int] = []
    original = callback.on_train_epoch_end

    def spy(trainer: Any, pl_module: Any) -> None:
        seen.append(len(callback._sizes))
        original(trainer, pl_module)

    callback.on_train_epoch_end = spy  # type: ignore[method-assign]
    trainer = fit(L, model, callback, tmp_path, epochs=1)
    assert seen == [3]
    sizes = torch.cat(model.sizes).float().flatten()
    assert trainer.callback_metrics["cld/epoch_empty_cluster_frac"].item() == pytest.approx(
        (sizes == 0).float().mean().item()
    )


def test_callback_owns_no_parameters_or_tensors() -> None:
    callback = CLDCallback(warmup_epochs=1)
    assert not isinstance(callback, nn.Module)
    assert not any(isinstance(v, torch.Tensor | nn.Parameter) for v in vars(callback).values())
    assert callback.state_dict() == {}


def test_callback_in_lightning_pytorch_namespace(tmp_path) -> None:
    L = pytest.importorskip("lightning.pytorch")
    _, model = make_toy("lightning.pytorch")
    callback = callback_class(L.Callback)(warmup_epochs=1)
    trainer = fit(L, model, callback, tmp_path, epochs=1)
    assert model.weights == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert "cld/epoch_empty_cluster_frac" in trainer.callback_metrics
