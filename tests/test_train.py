"""`cld-train` end to end: every experiment under fast_dev_run on generated data; bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cld_lightning.app.config_check import (
    ConfigError,
    check_cld,
    check_output_dir,
    check_train_config,
)
from cld_lightning.app.train import train
from tests.helpers import run_cld_train

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml")
)


def test_every_experiment_composes_and_validates(compose_train) -> None:
    assert {"cifar10_npid", "cifar10_npid_cld", "cifar100_npid_cld"} <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        cfg = compose_train(f"experiment={name}", tiny=False)
        check_train_config(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_every_experiment(experiment: str, compose_train, fake_data_root) -> None:
    cfg = compose_train(
        f"experiment={experiment}",
        f"paths.data_dir={fake_data_root}",
        "trainer.fast_dev_run=true",
        "backbone=cifar_resnet18_small",
        "backbone.width=4",
        "data.image_size=32",
        "data.download=false",
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"]))
    if cfg.cld.enabled:
        assert "cld/loss_step" in metrics and metrics["cld/loss_step"] > 0


def test_recipe_values_match_reference(compose_train) -> None:
    cfg = compose_train("experiment=cifar10_npid_cld", tiny=False)
    assert (cfg.cld.weight, cfg.cld.temperature, cfg.cld.num_clusters, cfg.cld.num_iters) == (
        1.0,
        0.2,
        128,
        5,
    )
    assert (cfg.data.batch_size, cfg.method.temperature, cfg.method.lr) == (256, 0.1, 0.06)
    assert cfg.method.weight_decay == pytest.approx(7e-4) and cfg.method.warmup_epochs == 5
    assert cfg.trainer.max_epochs == 200
    assert compose_train("experiment=cifar100_npid_cld", tiny=False).cld.num_clusters == 200
    plain = compose_train("experiment=cifar10_npid", tiny=False)
    assert plain.cld.enabled is False and plain.method.num_views == 1


@pytest.mark.parametrize(
    "override,key",
    [
        ("cld.weight=-1", "cld.weight"),
        ("cld.temperature=0", "cld.temperature"),
        ("cld.num_clusters=0", "cld.num_clusters"),
        ("cld.head=conv", "cld.head"),
        ("method.temperature=-0.1", "method.temperature"),
        ("method.lr=0", "method.lr"),
        ("data.imbalance_ratio=0.5", "data.imbalance_ratio"),
        ("selection.lidar_views=1", "selection.lidar_views"),
    ],
)
def test_invalid_values_fail_before_training_naming_the_key(
    override: str, key: str, compose_train, fake_data_root, monkeypatch
) -> None:
    import pytorch_lightning as pl

    cfg = compose_train(override, f"paths.data_dir={fake_data_root}", "trainer.fast_dev_run=true")
    fitted: list[bool] = []
    original_fit = pl.Trainer.fit

    def recording_fit(self, *args, **kwargs):
        fitted.append(True)
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", recording_fit)
    with pytest.raises(Exception, match=key.replace(".", r"\.")) as info:
        train(cfg)
    assert fitted == []  # rejected before training started, not by a crash inside it
    # a validation error (ConfigError, or the constructor's ValueError that Hydra's instantiate
    # wraps), not some other failure that happens to print the key
    err = info.value
    assert isinstance(err, ValueError) or isinstance(err.__cause__, ValueError), repr(err)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists() or not any(
        (Path(cfg.paths.output_dir) / "checkpoints").iterdir()
    )


def test_unknown_keys_in_a_group_file_name_the_key(compose_train) -> None:
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cfg = compose_train()
    # `cld` is typed by the CLDConfig schema: a file that sets `cld.wieght` (merged by Hydra as
    # below) is refused naming the key, even where the struct flag is lifted.
    with pytest.raises(ConfigKeyError, match=r"cld\.wieght"):
        OmegaConf.merge(cfg, {"cld": {"wieght": 1.0}})
    with pytest.raises(ConfigAttributeError, match=r"cld\.wieght"), open_dict(cfg):
        cfg.cld.wieght = 1.0
    # the checker still names the key of a plain dict (a config not composed through the schema)
    with pytest.raises(ConfigError, match=r"cld\.wieght"):
        check_cld(OmegaConf.create({**OmegaConf.to_container(cfg.cld), "wieght": 1.0}))
    cfg = compose_train()
    with open_dict(cfg):
        cfg.method.tempreature = 0.1
    with pytest.raises(ConfigError, match=r"method\.tempreature"):
        check_train_config(cfg)


def test_cli_typo_fails_with_key_name(tmp_path: Path) -> None:
    # `+` makes Hydra accept the new key, so the rejection must come from cld-train's own checker
    # (without it Hydra's struct mode refuses `cld.wieght=2` before any project code runs).
    proc = run_cld_train(
        "+cld.wieght=2",
        "data.download=false",  # should the check let it through: fail fast, no download
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "cld-train: configuration error" in out and "cld.wieght" in out
    assert "Traceback" not in out
    assert not (tmp_path / "checkpoints").exists()


def test_cli_bad_value_message(tmp_path: Path) -> None:
    proc = run_cld_train("cld.temperature=-1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "cld.temperature" in out and "Traceback" not in out


def test_unwritable_output_dir_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=str(blocker / "out")):
        check_output_dir(blocker / "out")


def test_one_builder_for_train_and_eval(compose_train) -> None:
    """cld-train and cld-eval build the module with the same function, from the same facts: the
    data set's sizes (not the method file's `num_classes: 10`) reach the constructor."""
    from cld_lightning.app.build import build_model

    cfg = compose_train("method=moco", "backbone=small_cnn", "cld.num_clusters=4")
    meta = {"in_channels": 1, "num_train_samples": 48, "num_classes": 3, "image_size": 28}
    torch.manual_seed(0)
    model = build_model(cfg.method, cfg.backbone, check_train_config(cfg), meta)
    assert cfg.method.num_classes == 10
    assert model.num_classes == 3 and model.hparams["num_classes"] == 3
    assert model.cld_enabled and model.hparams["cld"]["num_clusters"] == 4
    # cld-eval's inputs: the resolved config as stored in a checkpoint (plain dicts)
    stored = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)
    again = build_model(stored["method"], stored["backbone"], stored["cld"], meta)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 1, 28, 28)
    assert model.backbone(x).shape == (2, model.feature_dim)


def test_verdict_closes_the_summary_and_lands_in_metrics_json(
    compose_train, fake_data_root, capsys
) -> None:
    """The learned kNN against its baselines: 0/1 flags in metrics.json (floats, as its readers
    expect), the sentence and config-specific advice in verdict.json and at the summary's end."""
    import json

    from cld_lightning.eval.verdict import verdict

    cfg = compose_train(
        "data=cifar10",
        f"paths.data_dir={fake_data_root}",
        "data.download=false",
        "backbone=small_cnn",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "method.knn_k=5",
        "selection.enabled=false",
        "plots.enabled=false",
    )
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert all(isinstance(v, float) for v in saved.values())
    expected = verdict(saved)
    assert saved["verdict/below_pixels"] == float(expected.below_pixels)
    assert saved["verdict/below_untrained"] == float(expected.below_untrained)
    assert metrics["verdict/below_pixels"] == saved["verdict/below_pixels"]
    report = json.loads((out / "verdict.json").read_text())
    assert report["verdict"] == expected.summary and report["context"]["steps"] == 2
    assert report["context"]["method"] == "npid"
    printed = capsys.readouterr().out
    summary = printed[printed.rindex("cld-train finished") :]
    assert expected.summary in summary.split("-" * 60)[-1]  # after the outputs line
    if expected.below:  # NPID, 2 steps: say so and suggest MoCo / more steps
        assert "only 2 optimiser steps in 1 epoch" in report["advice"][0]
        assert "only 2 optimiser steps" in summary
        assert any("MoCo instead of NPID" in a for a in report["advice"])
    else:
        assert report["advice"] == []
