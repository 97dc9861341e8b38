"""``load_from_checkpoint`` of every method on a plain Lightning checkpoint (backbone passed in;
without one the error says what to do). cld-train checkpoints: tests/test_train_plugin.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cld_lightning.methods import BYOL, NPID, InfoMin, MoCo
from tests.helpers import MLPBackbone, TinyDataModule, quiet_trainer

KW = {"warmup_epochs": 0, "num_classes": 4, "knn_k": 5}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(cls: type) -> pl.LightningModule:
    torch.manual_seed(0)
    cld = {"num_clusters": 4, "out_dim": 8}
    if cls is NPID:
        return NPID(MLPBackbone(), 40, cld, embed_dim=8, **KW)
    if cls is BYOL:
        return BYOL(
            MLPBackbone(),
            cld,
            embed_dim=8,
            projector_hidden_dim=16,
            predictor_hidden_dim=16,
            **KW,
        )
    extra = {"jigsaw_weight": 0.0} if cls is InfoMin else {}
    return cls(
        MLPBackbone(),
        cld,
        embed_dim=8,
        queue_size=16,
        gather_distributed=False,
        **KW,
        **extra,
    )


@pytest.mark.parametrize("cls", [NPID, MoCo, BYOL, InfoMin])
def test_load_from_checkpoint_restores_every_tensor(cls: type, tmp_path: Path) -> None:
    model = _build(cls)
    trainer = quiet_trainer(max_steps=2, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=TinyDataModule())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = cls.load_from_checkpoint(path, backbone=MLPBackbone())
    fresh, trained = _build(cls).state_dict(), model.state_dict()
    state = loaded.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in trained)
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained)  # training changed it
    assert loaded.cld_enabled and loaded.num_classes == 4
    with pytest.raises(ValueError, match="pass backbone="):
        cls.load_from_checkpoint(path)
