"""Exact resume: k steps + stop (mid-epoch) + resume == uninterrupted run, bitwise on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cld_lightning.resume import ExactResume
from tests.helpers import TinyDataModule, make_npid, quiet_trainer


def _fit(
    dm_factory,
    model_factory,
    tmp: Path,
    ckpt: str | None = None,
    exact: bool = True,
    save: bool = False,
) -> pl.LightningModule:
    pl.seed_everything(0, workers=True)
    model = model_factory()
    callbacks: list = [ExactResume(0)] if exact else []
    if save:
        callbacks.append(
            ModelCheckpoint(
                dirpath=tmp,
                every_n_train_steps=3,
                save_top_k=-1,
                filename="s{step}",
                auto_insert_metric_name=False,
            )
        )
    trainer = quiet_trainer(
        max_epochs=2, callbacks=callbacks, deterministic=True, enable_checkpointing=save
    )
    trainer.fit(model, datamodule=dm_factory(), ckpt_path=ckpt)
    assert trainer.global_step == 10
    return model


def _same(a: pl.LightningModule, b: pl.LightningModule) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _check(dm_factory, model_factory, tmp: Path) -> None:
    full = _fit(dm_factory, model_factory, tmp, save=True)
    # step 3 = mid epoch 0; step 6 = mid epoch 1 (5 batches per epoch)
    for step in (3, 6):
        resumed = _fit(dm_factory, model_factory, tmp, ckpt=str(tmp / f"s{step}.ckpt"))
        assert _same(full, resumed), f"resume from step {step} diverged"
    assert not torch.equal(full.memory.bank, model_factory().memory.bank)  # the bank trained


def test_exact_resume_tiny_datamodule(tmp_path) -> None:
    _check(TinyDataModule, make_npid, tmp_path)


def test_resume_without_exact_resume_diverges(tmp_path) -> None:
    """Negative control: the property above is not automatic (the test can fail)."""
    full = _fit(TinyDataModule, make_npid, tmp_path, exact=False, save=True)
    resumed = _fit(TinyDataModule, make_npid, tmp_path, ckpt=str(tmp_path / "s3.ckpt"), exact=False)
    assert not _same(full, resumed)


def test_exact_resume_ssl_datamodule(tmp_path) -> None:
    from cld_lightning.data import SSLDataModule
    from cld_lightning.data.synthetic import write_fake_fashion_mnist

    write_fake_fashion_mnist(tmp_path / "data", n_train=40, n_test=8)

    def dm() -> SSLDataModule:
        return SSLDataModule(
            dataset="fashion_mnist",
            root=str(tmp_path / "data"),
            batch_size=8,
            num_workers=0,
            download=False,
            seed=0,
        )

    _check(dm, lambda: make_npid(40, in_dim=28 * 28), tmp_path / "ckpt")


def test_plain_dataloader_is_not_lightning_stateful() -> None:
    """Why ExactResume tracks the position itself (see cld_lightning.resume): Lightning restores a
    loader's position only for `_Stateful` loaders, and the DataLoader datamodules return is not
    one. If this starts failing, Lightning's own mechanism may be able to replace ExactResume's."""
    from lightning_fabric.utilities.types import _Stateful
    from torch.utils.data import DataLoader

    from cld_lightning.resume import make_resumable_loader

    plain = DataLoader(list(range(8)), batch_size=2)
    assert not isinstance(plain, _Stateful)
    assert not isinstance(make_resumable_loader(plain, seed=0), _Stateful)
