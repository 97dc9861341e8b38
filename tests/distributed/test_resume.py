"""Exact resume: k steps + stop (mid-epoch) + resume == uninterrupted run, bitwise on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cld_lightning.app.resume import ExactResume
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
    """Why ExactResume tracks the position itself (see cld_lightning.app.resume): Lightning restores a
    loader's position only for `_Stateful` loaders, and the DataLoader datamodules return is not
    one. If this starts failing, Lightning's own mechanism may be able to replace ExactResume's."""
    from lightning_fabric.utilities.types import _Stateful
    from torch.utils.data import DataLoader

    from cld_lightning.app.resume import make_resumable_loader

    plain = DataLoader(list(range(8)), batch_size=2)
    assert not isinstance(plain, _Stateful)
    assert not isinstance(make_resumable_loader(plain, seed=0), _Stateful)


# ----------------------------------------------------------------------------- resume checks
META = {"in_channels": 3, "num_train_samples": 64, "num_classes": 10, "image_size": 32}


def _cld_train_checkpoint(compose_train, path: Path, *overrides: str):
    """A checkpoint as cld-train writes it (weights, optimiser state, the resolved config and the
    data facts), built without training."""
    from omegaconf import OmegaConf

    from cld_lightning.app.build import build_model
    from cld_lightning.app.config_check import check_cld

    cfg = compose_train("method=moco", "backbone=small_cnn", "backbone.width=8", *overrides)
    model = build_model(cfg.method, cfg.backbone, check_cld(cfg.cld), META)
    opt = torch.optim.SGD(model.parameter_groups(), lr=0.1, momentum=0.9)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "optimizer_states": [opt.state_dict()],
            "cld_lightning_config": OmegaConf.to_container(cfg, resolve=True),
            "cld_lightning_meta": META,
            "pytorch-lightning_version": pl.__version__,
        },
        path,
    )
    return cfg


def test_resume_with_another_width_names_the_differing_keys(compose_train, tmp_path) -> None:
    import pytest

    from cld_lightning.app.checkpoints import check_resume_checkpoint
    from cld_lightning.app.config_check import check_train_config
    from cld_lightning.app.errors import ConfigError
    from cld_lightning.app.train import train

    path = tmp_path / "last.ckpt"
    _cld_train_checkpoint(compose_train, path)
    cfg = compose_train(
        "method=moco",
        "backbone=small_cnn",
        "backbone.width=16",
        "cld.num_clusters=5",
        f"ckpt_path={path}",
    )
    with pytest.raises(ConfigError) as info:
        check_resume_checkpoint(cfg, check_train_config(cfg))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "backbone.width: 8 in the checkpoint, 16 now" in message
    assert "cld.num_clusters: 128 in the checkpoint, 5 now" in message
    assert "differ in shape (e.g. backbone." in message
    assert "size mismatch" not in message  # not Lightning's list
    with pytest.raises(ConfigError, match=r"backbone\.width: 8 in the checkpoint, 16 now"):
        train(cfg)  # the train entry refuses before building data or a Trainer


def test_resume_with_other_optimiser_groups_is_refused(compose_train, tmp_path) -> None:
    import pytest

    from cld_lightning.app.checkpoints import check_resume_checkpoint
    from cld_lightning.app.config_check import check_train_config
    from cld_lightning.app.errors import ConfigError

    path = tmp_path / "last.ckpt"
    _cld_train_checkpoint(compose_train, path)
    cfg = compose_train(
        "method=moco",
        "backbone=small_cnn",
        "backbone.width=8",
        "method.exclude_bias_and_norm_from_wd=true",
        f"ckpt_path={path}",
    )
    with pytest.raises(ConfigError) as info:
        check_resume_checkpoint(cfg, check_train_config(cfg))
    assert "optimiser parameter-group sizes" in str(info.value)
    assert "method.exclude_bias_and_norm_from_wd: False in the checkpoint, True now" in str(
        info.value
    )


def test_resume_with_compatible_changes_is_allowed_and_they_are_named(
    compose_train, tmp_path, caplog
) -> None:
    from cld_lightning.app.checkpoints import check_resume_checkpoint

    path = tmp_path / "last.ckpt"
    _cld_train_checkpoint(compose_train, path)
    same = compose_train(
        "method=moco", "backbone=small_cnn", "backbone.width=8", f"ckpt_path={path}"
    )
    assert check_resume_checkpoint(same) == []
    longer = compose_train(
        "method=moco",
        "backbone=small_cnn",
        "backbone.width=8",
        "trainer.max_epochs=7",
        "method.lr=0.1",
        f"ckpt_path={path}",
        "+callbacks.extra=null",
    )
    with caplog.at_level("WARNING", logger="cld_lightning.app.checkpoints"):
        diffs = check_resume_checkpoint(longer)
    assert diffs == [
        "method.lr: 0.06 in the checkpoint, 0.1 now",
        "trainer.max_epochs: 200 in the checkpoint, 7 now",
    ]
    assert "method.lr: 0.06 in the checkpoint, 0.1 now" in caplog.text


def test_truncated_or_missing_checkpoint_is_one_line_naming_the_path(
    compose_train, tmp_path
) -> None:
    import subprocess
    import sys

    import pytest

    from cld_lightning.app.checkpoints import check_resume_checkpoint
    from cld_lightning.app.config_check import check_train_config
    from cld_lightning.app.errors import ConfigError
    from tests.distributed.helpers import script_env

    good = tmp_path / "good.ckpt"
    _cld_train_checkpoint(compose_train, good)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cfg = compose_train(
        "method=moco", "backbone=small_cnn", "backbone.width=8", f"ckpt_path={broken}"
    )
    with pytest.raises(ConfigError) as info:
        check_resume_checkpoint(cfg, check_train_config(cfg))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"ckpt_path: cannot read the checkpoint '{broken}' (truncated or corrupt?)"
    )
    missing = compose_train(f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(ConfigError, match="ckpt_path: no checkpoint file at .*nope.ckpt"):
        check_resume_checkpoint(missing)
    check_train_config(missing)  # placeholders in docs validate; training from one cannot:
    from cld_lightning.app.train import train

    with pytest.raises(ConfigError, match=r"^ckpt_path: no checkpoint file at .*nope.ckpt'$"):
        train(missing)
    # the console script: one line on stderr, no stack trace
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cld_lightning.app.train",
            "method=moco",
            "backbone=small_cnn",
            "backbone.width=8",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'cli'}",
            f"ckpt_path={broken}",
        ],
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=300,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "cannot read the checkpoint" in line]
    assert lines and str(broken) in lines[-1], run.stderr[-2000:]


def test_an_option_added_since_the_checkpoint_is_no_difference() -> None:
    from cld_lightning.app.checkpoints import config_differences

    stored = {"data": {"batch_size": 8}, "seed": 0}
    current = {"data": {"batch_size": 8, "split_file": None}, "seed": 0, "selection": {"q": 2}}
    assert config_differences(stored, current) == [
        "selection.q: '(absent)' in the checkpoint, 2 now"
    ]
    assert config_differences(current, stored) == [
        "selection.q: 2 in the checkpoint, '(absent)' now"
    ]
