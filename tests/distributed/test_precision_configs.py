"""Mixed precision keeps k-means + CLD in fp32; trainer / launcher configs compose and validate."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cld_lightning.config_check import check_target_keys
from tests.distributed.helpers import TinyDataModule, make_npid, quiet_trainer

CONF = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "conf")


def test_cld_loss_is_fp32_under_bf16_autocast() -> None:
    model = make_npid()
    views = [torch.rand(8, 3, 8, 8) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.features(views[0])
        losses, _ = model.compute_loss(
            (views, torch.zeros(8, dtype=torch.long), torch.arange(8)), 0
        )
    assert feats.dtype == torch.bfloat16  # autocast was really on
    out = model.last_cld_output
    assert out.loss.dtype == torch.float32 and out.centroids[0].dtype == torch.float32
    assert torch.isfinite(losses["loss"])


def test_training_runs_with_bf16_mixed() -> None:
    model = make_npid()
    trainer = quiet_trainer(max_steps=3, precision="bf16-mixed")
    trainer.fit(model, datamodule=TinyDataModule())
    assert trainer.global_step == 3
    assert torch.isfinite(trainer.callback_metrics["cld/loss"])
    assert model.last_cld_output.loss.dtype == torch.float32


def _compose(overrides: list[str], hydra_cfg: bool = False):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_cfg)


@pytest.mark.parametrize("name", ["cpu", "gpu", "ddp", "ddp_multinode", "ddp_spawn_cpu"])
def test_trainer_configs_compose_and_validate(name: str) -> None:
    cfg = _compose([f"trainer={name}", "trainer.sync_batchnorm=true"])
    check_target_keys(cfg.trainer, "trainer", provided=("callbacks", "logger"))
    assert cfg.trainer.sync_batchnorm is True


def test_multinode_and_slurm_launcher_compose() -> None:
    cfg = _compose(
        [
            "trainer=ddp_multinode",
            "trainer.num_nodes=2",
            "trainer.devices=4",
            "hydra/launcher=slurm",
        ],
        hydra_cfg=True,
    )
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2
    assert cfg.trainer.use_distributed_sampler is True
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    cfg.hydra.launcher.submitit_folder = "x"  # needs a sweep dir otherwise
    assert cfg.hydra.launcher.nodes == 2 and cfg.hydra.launcher.tasks_per_node == 4
    assert cfg.hydra.launcher.gpus_per_node == 4


def test_ddp_spawn_cpu_trainer_instantiates() -> None:
    import hydra

    cfg = _compose(["trainer=ddp_spawn_cpu"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, default_root_dir="/tmp/x")
    assert trainer.world_size == 2 and trainer.num_devices == 2
