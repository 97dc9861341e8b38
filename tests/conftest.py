"""Shared fixtures: generated on-disk data sets and Hydra composition of `conf/train.yaml`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cld_lightning.app.config_check import register_schemas

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register_schemas()  # the `cld/_schema` config that conf/cld/*.yaml extend

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def fresh_master_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """A free MASTER_PORT per test: Lightning's ddp_spawn writes the port it picked into
    os.environ and the next Trainer would reuse it (EADDRINUSE while the old store lingers)."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread (several oversubscribe a loaded 2-core machine badly)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR-10/100 pickles, Fashion-MNIST IDX, an ImageFolder 'imagenet', all tiny."""
    from cld_lightning.data import synthetic

    root = tmp_path_factory.mktemp("data")
    synthetic.write_fake_cifar(root, "cifar10", n_train=64, n_test=32)
    synthetic.write_fake_cifar(root, "cifar100", n_train=64, n_test=32)
    synthetic.write_fake_fashion_mnist(root, n_train=64, n_test=32)
    synthetic.write_fake_imagefolder(
        root / "imagenet", classes=4, per_class=8, size=32, splits=("train", "val")
    )
    return root


TINY = [
    "backbone.width=4",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.strategy=auto",
    "trainer.num_nodes=1",
    "trainer.enable_progress_bar=false",
    # results must not depend on the CPU: `auto` is tested with injected facts (test_device_choice)
    "trainer.precision=32-true",
]


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose `train.yaml` with overrides, outputs under tmp_path, Hydra runtime set."""

    def _compose(*overrides: str, tiny: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[
                    *(TINY if tiny else []),
                    f"paths.output_dir={tmp_path / 'run'}",
                    *overrides,
                ],
                return_hydra_config=True,
            )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            del cfg.hydra  # as in a real run: the task config holds no `hydra` node
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
