"""The one set of shared test pieces: tiny data, tiny backbones, method factories, a quiet Trainer.

Plain functions and classes, imported by the test files (``from tests.helpers import ...``); a
test file never imports another test file. Process spawning, fault injection and the 2-process
workers of the distributed tests: :mod:`tests.distributed.helpers`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cld_lightning.cld import cross_level_loss
from cld_lightning.data import SSLDataModule
from cld_lightning.methods import BYOL, NPID, MoCo
from cld_lightning.models import build_backbone

# `cld-train` overrides that keep a test run small: a 4-channel CNN, no download, no end-of-run
# evaluation (final kNN, baselines, selection metrics, plots)
FAST_TRAIN = [
    "backbone=small_cnn",
    "backbone.width=4",
    "data.download=false",
    "final_knn=false",
    "baselines=false",
    "selection.enabled=false",
    "plots.enabled=false",
]


def run_cld_train(
    *overrides: str, timeout: int = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``cld-train`` (``python -m cld_lightning.app.train``) with Hydra ``overrides`` in a subprocess;
    output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "cld_lightning.app.train", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def imagefolder_train_args(root: Any, run: Any) -> list[str]:
    """``cld-train`` overrides for a tiny ImageFolder at ``root`` (``train``/``test`` splits of
    16 px images): one epoch of a 4-wide CNN, batch 8, no end-of-run evaluation or logger, the run
    folder ``run``."""
    return [
        "backbone=small_cnn",
        "backbone.width=4",
        "data=imagefolder",
        f"data.root={root}",
        "data.test_dir=test",
        "data.image_size=16",
        "data.batch_size=8",
        "data.num_workers=0",
        "cld.num_clusters=4",
        "final_knn=false",
        "baselines=false",
        "selection.enabled=false",
        "plots.enabled=false",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        f"hydra.run.dir={run}",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------- data
class TinyViews(Dataset):
    """``(views, target, index)``: ``num_views`` noisy views of ``n`` fixed random
    ``3 x size x size`` images (drawn from ``seed``), targets ``index % num_classes``.

    The views are deterministic (noise seeded by the index, so a test can recompute a step)
    unless ``augment=True``: then each view's noise and a random horizontal flip come from the
    global RNG (:func:`augmented_views`).
    """

    def __init__(
        self,
        n: int = 32,
        num_views: int = 2,
        size: int = 16,
        noise: float = 0.1,
        num_classes: int = 3,
        seed: int = 0,
        augment: bool = False,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, size, size, generator=g)
        self.y = torch.arange(n) % num_classes
        self.num_views, self.noise, self.augment = num_views, noise, augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        if self.augment:
            views = []
            for _ in range(self.num_views):
                v = self.x[i] + self.noise * torch.randn_like(self.x[i])
                if torch.rand(()) < 0.5:
                    v = v.flip(-1)
                views.append(v)
            return views, self.y[i], i
        g = torch.Generator().manual_seed(i)
        views = [
            self.x[i] + self.noise * torch.randn(self.x[i].shape, generator=g)
            for _ in range(self.num_views)
        ]
        return views, self.y[i], i


def augmented_views(n: int = 40) -> TinyViews:
    """Two randomly augmented (noise + random flip) views of ``3x8x8`` images, 4 classes: the data
    of :class:`MLPBackbone` models."""
    return TinyViews(n, size=8, num_classes=4, seed=123, augment=True)


class TinyDataModule(pl.LightningDataModule):
    """:func:`augmented_views`, shuffled, incomplete last batch dropped."""

    def __init__(self, n: int = 40, batch_size: int = 8) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size
        self.dataset = augmented_views(n)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)


def assert_jigsaw_needs_dali(root: Any) -> None:
    """The jigsaw view of ``augmentation=infomin_jigsaw`` is batched only by DALI: an image folder
    augmented on the device with ``decoder=dali`` is the one way, and the error says so."""
    with pytest.raises(ValueError, match="data.augmentation='infomin_jigsaw'.*data.decoder=dali"):
        SSLDataModule(
            dataset="imagefolder",
            root=root,
            augmentation="infomin_jigsaw",
            augment_on="device",
            decoder="dali",
        )


def first_batch(num_views: int, batch_size: int = 8, size: int = 16) -> Any:
    return next(iter(DataLoader(TinyViews(num_views=num_views, size=size), batch_size=batch_size)))


def clustered_features(
    seed: int = 0,
    n_train: int = 150,
    n_test: int = 40,
    dim: int = 8,
    num_classes: int = 5,
    spread: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """A kNN problem: unit-norm features around ``num_classes`` random centres (Gaussian noise of
    std ``spread``), ``(x_train, y_train, x_test, y_test, num_classes)``."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen)
    ytr = torch.randint(num_classes, (n_train,), generator=gen)
    yte = torch.randint(num_classes, (n_test,), generator=gen)
    xtr = F.normalize(centres[ytr] + spread * torch.randn(n_train, dim, generator=gen), dim=1)
    xte = F.normalize(centres[yte] + spread * torch.randn(n_test, dim, generator=gen), dim=1)
    return xtr, ytr, xte, yte, num_classes


# ----------------------------------------------------------------------------------- models
class MLPBackbone(nn.Module):
    """Flatten -> Linear -> BatchNorm -> ReLU -> Linear (BatchNorm makes batch composition matter)."""

    def __init__(
        self,
        in_dim: int = 3 * 8 * 8,
        hidden: int = 32,
        feature_dim: int = 16,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Linear(hidden, feature_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_backbone() -> nn.Module:
    """CIFAR ResNet-18 at width 4 (for the 16x16 :class:`TinyViews`)."""
    return build_backbone("cifar_resnet18", width=4, in_channels=3)


def make_npid(
    n: int = 40,
    seed: int = 0,
    in_dim: int = 3 * 8 * 8,
    cld: dict | None = None,
    batchnorm: bool = True,
    method: type[NPID] = NPID,
    **kw: Any,
) -> NPID:
    """NPID(+CLD) on an :class:`MLPBackbone` (8-d embedding, 4 clusters, 4 classes); ``method``:
    NPID or a subclass."""
    torch.manual_seed(seed)
    cld_cfg = {"num_clusters": 4, "out_dim": 8, **(cld or {})}
    kw.setdefault("warmup_epochs", 0)
    kw.setdefault("lr", 0.1)
    return method(
        MLPBackbone(in_dim, batchnorm=batchnorm),
        n,
        cld_cfg,
        embed_dim=8,
        knn_k=5,
        num_classes=4,
        **kw,
    )


def make_resnet_npid(n: int = 24, cld: bool = True, **kw: Any) -> NPID:
    """NPID(+CLD) on :func:`tiny_backbone` (4 clusters, 3 classes)."""
    torch.manual_seed(0)
    return NPID(
        tiny_backbone(),
        n,
        {"enabled": cld, "num_clusters": 4},
        knn_k=5,
        num_classes=3,
        warmup_epochs=0,
        **kw,
    )


def make_moco(cld: bool = True, seed: int = 0, method: type[MoCo] = MoCo, **kw: Any) -> MoCo:
    """MoCo(+CLD) on :func:`tiny_backbone` (NormLinear heads, 3 clusters, λ 0.8, queue 20);
    ``method``: MoCo or a subclass (InfoMin)."""
    torch.manual_seed(seed)
    kw.setdefault("queue_size", 20)
    kw.setdefault("warmup_epochs", 0)
    kw.setdefault("gather_distributed", False)
    cld_cfg = {"enabled": cld, "num_clusters": 3, "weight": 0.8, "head": "normlinear"}
    return method(
        tiny_backbone(), cld_cfg, instance_head="normlinear", num_classes=3, knn_k=5, **kw
    )


def make_byol(cld: bool = True, seed: int = 0, **kw: Any) -> BYOL:
    """BYOL(+CLD) on :func:`tiny_backbone` (16-d embedding, 3 clusters, λ 0.8)."""
    torch.manual_seed(seed)
    kw.setdefault("warmup_epochs", 0)
    cld_cfg = {"enabled": cld, "num_clusters": 3, "weight": 0.8}
    return BYOL(
        tiny_backbone(),
        cld_cfg,
        embed_dim=16,
        projector_hidden_dim=32,
        predictor_hidden_dim=24,
        num_classes=3,
        knn_k=5,
        **kw,
    )


def assert_cld_adds_exactly_lambda_lcld(
    model: Any, batch: Any, cld_views: tuple[int, int], make_off: Any
) -> dict:
    """``loss(CLD on) == loss(CLD off, same weights) + λ·L_CLD`` recomputed from the group head."""
    model.cld_weight = 0.8
    torch.manual_seed(1)
    losses, _ = model.compute_loss(batch, 0)
    off = make_off()
    missing, unexpected = off.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("group_head") for k in unexpected)
    torch.manual_seed(1)
    off_losses, _ = off.compute_loss(batch, 0)
    torch.testing.assert_close(losses["instance_loss"], off_losses["loss"])
    views = batch[0]
    f1, f2 = model.features(views[cld_views[0]]), model.features(views[cld_views[1]])
    g1, g2 = F.normalize(model.group_head(f1), dim=1), F.normalize(model.group_head(f2), dim=1)
    l_cld = cross_level_loss(g1, g2, 3, 0.2, 5)
    torch.testing.assert_close(losses["loss"], off_losses["loss"] + 0.8 * l_cld)
    torch.testing.assert_close(losses["cld_weighted"], 0.8 * l_cld)
    return losses


# ---------------------------------------------------------------------------------- trainer
def quiet_trainer(default_root_dir: Any = None, **kw: Any) -> pl.Trainer:
    """One CPU device; no logger, progress bar, model summary, sanity check, validation or
    checkpointing (each can be turned back on through ``kw``, e.g. ``limit_val_batches=1.0``)."""
    base = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_checkpointing=False,
        default_root_dir=default_root_dir,
    )
    base.update(kw)
    return pl.Trainer(**base)
