"""Mixed precision keeps k-means + CLD in fp32; trainer / launcher configs compose and validate."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cld_lightning.app.config_check import check_target_keys
from tests.helpers import TinyDataModule, make_npid, quiet_trainer

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


# what each trainer file states or inherits through its defaults list (ddp_multinode <- ddp <- cpu)
TRAINER_EXPECTED = {
    "cpu": dict(accelerator="cpu", devices=1, strategy="auto", num_nodes=1, precision="auto"),
    "gpu": dict(accelerator="gpu", devices=1, strategy="auto", num_nodes=1, precision="auto"),
    "ddp": dict(accelerator="gpu", devices="auto", strategy="ddp", num_nodes=1, precision="auto"),
    "ddp_multinode": dict(
        accelerator="gpu", devices=8, strategy="ddp", num_nodes=2, precision="auto"
    ),
    "ddp_spawn_cpu": dict(
        accelerator="cpu", devices=2, strategy="ddp_spawn", num_nodes=1, precision="auto"
    ),
}


@pytest.mark.parametrize("name", sorted(TRAINER_EXPECTED))
def test_trainer_configs_compose_and_validate(name: str) -> None:
    cfg = _compose([f"trainer={name}"])
    check_target_keys(cfg.trainer, "trainer", provided=("callbacks", "logger"))
    got = {k: cfg.trainer[k] for k in TRAINER_EXPECTED[name]}
    assert got == TRAINER_EXPECTED[name]
    assert cfg.trainer.sync_batchnorm is False  # SyncBN is opt-in everywhere
    assert cfg.trainer.max_epochs == 200  # inherited from cpu.yaml, not restated
    if cfg.trainer.strategy != "auto":
        assert cfg.trainer.use_distributed_sampler is True


def test_multinode_and_slurm_launcher_compose() -> None:
    # the launcher's SLURM geometry follows the trainer's: file defaults first, then overrides
    for overrides, nodes, per_node in (
        ([], 2, 8),
        (["trainer.num_nodes=3", "trainer.devices=4"], 3, 4),
    ):
        cfg = _compose(
            ["trainer=ddp_multinode", "hydra/launcher=slurm", *overrides], hydra_cfg=True
        )
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
        assert launcher["_target_"].endswith("SlurmLauncher")
        cfg.hydra.launcher.submitit_folder = "x"  # needs a sweep dir otherwise
        assert cfg.hydra.launcher.nodes == nodes
        assert cfg.hydra.launcher.tasks_per_node == per_node
        assert cfg.hydra.launcher.gpus_per_node == per_node


def test_ddp_spawn_cpu_trainer_instantiates() -> None:
    import hydra

    from cld_lightning.app.device_choice import choose_precision, probe_device

    cfg = _compose(["trainer=ddp_spawn_cpu"])
    # `auto` is cld-train's to decide (Lightning refuses it): resolve it as cld-train does
    precision = choose_precision(cfg.trainer.precision, probe_device("cpu")).value
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=False, default_root_dir="/tmp/x", precision=precision
    )
    assert trainer.world_size == 2 and trainer.num_devices == 2
