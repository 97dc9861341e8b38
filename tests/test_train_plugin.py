"""`cld-train` as a user runs it: no logger, Trainer keys on the command line, checkpoints that
record the data set and reload, data preparation on one process per node, checkpoint retention,
and pre-emption twice + resume from ``last.ckpt`` (bitwise equal to an uninterrupted run)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import hydra
import pytest
import pytorch_lightning as pl
import torch

from cld_lightning.app.train import train
from tests.helpers import FAST_TRAIN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SigtermAt(pl.Callback):
    """Sends SIGTERM to this process when a training batch starts at global step ``step``
    (GracefulShutdown then checkpoints at the end of that step: a deterministic pre-emption)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = False

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not self.sent:  # once (micro-batches share a step)
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_common_trainer_keys_need_no_plus(compose_train) -> None:
    cfg = compose_train(
        "trainer.max_steps=7",
        "trainer.max_epochs=-1",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0",
        "trainer.limit_train_batches=3",
        "trainer.max_time=00:00:10:00",
        "logger=none",
    )
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    assert (trainer.max_steps, trainer.max_epochs, trainer.accumulate_grad_batches) == (7, -1, 2)
    assert (trainer.gradient_clip_val, trainer.limit_train_batches) == (1.0, 3)


def test_logger_none_trains(compose_train, fake_data_root) -> None:
    cfg = compose_train(
        "logger=none",
        f"paths.data_dir={fake_data_root}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        *FAST_TRAIN,
    )
    metrics = train(cfg)  # LearningRateMonitor is dropped instead of raising
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_last_checkpoint_every_epoch_when_validation_is_rarer(compose_train, fake_data_root):
    """The main job validates every 7th epoch: last.ckpt must still hold every epoch's state."""
    cfg = compose_train(
        f"paths.data_dir={fake_data_root}",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=3",
        "trainer.limit_train_batches=2",
        "final_knn=false",
        "baselines=false",
        *FAST_TRAIN,
    )
    train(cfg)
    ckpt = _ckpt(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 4  # after epoch 2, no validation ran


def test_checkpoint_records_the_data_set_and_reloads(compose_train, tmp_path) -> None:
    """A 3-class ImageFolder with train/ + test/ (no val/): hyper_parameters say 3 classes and
    ``load_from_checkpoint`` rebuilds the method, backbone included, with equal weights."""
    from cld_lightning.data.synthetic import write_fake_imagefolder
    from cld_lightning.methods import MoCo

    root = write_fake_imagefolder(tmp_path / "folder", classes=3, per_class=8, size=32)
    cfg = compose_train(
        "data=imagefolder",
        f"data.root={root}",
        "data.image_size=32",
        "method=moco",
        "method.queue_size=32",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        *FAST_TRAIN,
    )
    assert cfg.method.num_classes == 10 and cfg.data.test_dir is None
    train(cfg)
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    ckpt = _ckpt(path)
    assert ckpt["hyper_parameters"]["num_classes"] == 3
    model = MoCo.load_from_checkpoint(path)
    assert model.num_classes == 3 and model.queue.size == 32
    state = model.state_dict()
    assert state.keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(state[k], v) for k, v in ckpt["state_dict"].items())


def test_prepare_data_runs_on_local_rank_zero_only(
    compose_train, fake_data_root, monkeypatch
) -> None:
    """cld-train prepares (downloads) before the Trainer exists on local rank 0 only; inside
    ``fit`` Lightning's own call is rank-checked and followed by a barrier."""
    from cld_lightning.data import SSLDataModule

    calls: list[str] = []

    def spy(self: Any) -> None:
        calls.append("cld-train" if self.trainer is None else "lightning")

    monkeypatch.setattr(SSLDataModule, "prepare_data", spy)
    overrides = ("logger=none", f"paths.data_dir={fake_data_root}", "trainer.fast_dev_run=true")
    for rank, expected in (("1", []), ("0", ["cld-train"])):
        monkeypatch.setenv("LOCAL_RANK", rank)
        calls.clear()
        train(compose_train(*overrides, *FAST_TRAIN))
        assert [c for c in calls if c == "cld-train"] == expected, f"LOCAL_RANK={rank}"


def _resume_cfg(compose_train, data_root: Path, out: Path, *extra: str) -> Any:
    return compose_train(
        "logger=none",
        f"paths.data_dir={data_root}",
        f"paths.output_dir={out}",
        "data.batch_size=8",  # 64 images -> 8 steps per epoch
        "trainer.max_epochs=4",
        "callbacks.checkpoint.every_n_epochs=2",
        *FAST_TRAIN,
        *extra,
    )


def test_preempted_twice_resumes_bitwise_and_last_is_newest(
    compose_train, fake_data_root, tmp_path
):
    """SIGTERM at step 5, resume from last.ckpt; SIGTERM at step 21, resume from last.ckpt again;
    the run ends equal (bitwise) to an uninterrupted one. last.ckpt is always the newest state,
    there is no last-v1.ckpt, and only every second epoch is kept besides it."""
    full_dir, run_dir = tmp_path / "full", tmp_path / "preempted"
    train(_resume_cfg(compose_train, fake_data_root, full_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    killer = "+callbacks.killer._target_=tests.test_train_plugin.SigtermAt"
    for segment, (kill_at, resume) in enumerate([(4, False), (20, True), (None, True)]):
        extra = [killer, f"+callbacks.killer.step={kill_at}"] if kill_at is not None else []
        if resume:
            extra.append(f"ckpt_path={last}")
        metrics = train(_resume_cfg(compose_train, fake_data_root, run_dir, *extra))
        # the signal arrives as step kill_at+1 starts; last.ckpt holds the state after it
        expected = 32 if kill_at is None else kill_at + 1
        assert bool(metrics.get("interrupted")) == (kill_at is not None), segment
        assert _ckpt(last)["global_step"] == expected, segment
        names = sorted(p.name for p in last.parent.iterdir())
        assert not [n for n in names if n.startswith("last-")], names
    assert names == ["epoch001.ckpt", "epoch003.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (full_dir / "checkpoints").iterdir()) == names
    for name in names:
        a, b = _ckpt(full_dir / "checkpoints" / name), _ckpt(run_dir / "checkpoints" / name)
        assert a["global_step"] == b["global_step"]
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), f"{name}: {key} differs"
    assert not torch.equal(
        _ckpt(full_dir / "checkpoints" / "epoch001.ckpt")["state_dict"]["memory.bank"],
        _ckpt(last)["state_dict"]["memory.bank"],
    )  # training moved on between the kept checkpoints


def test_preempted_mid_accumulation_saves_at_the_step_boundary(
    compose_train, fake_data_root, tmp_path
):
    """With accumulate_grad_batches=2 a SIGTERM during the first micro-batch of step 3 is honoured
    after the second one (its optimiser step and state update done): resuming is bitwise exact."""
    accumulate = ("trainer.accumulate_grad_batches=2", "trainer.max_epochs=2")
    full_dir, run_dir = tmp_path / "full", tmp_path / "preempted"
    train(_resume_cfg(compose_train, fake_data_root, full_dir, *accumulate))
    last = run_dir / "checkpoints" / "last.ckpt"
    killer = [
        "+callbacks.killer._target_=tests.test_train_plugin.SigtermAt",
        "+callbacks.killer.step=2",
    ]
    assert train(_resume_cfg(compose_train, fake_data_root, run_dir, *accumulate, *killer))
    saved = _ckpt(last)
    assert saved["global_step"] == 3
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 6
    train(_resume_cfg(compose_train, fake_data_root, run_dir, *accumulate, f"ckpt_path={last}"))
    a, b = _ckpt(full_dir / "checkpoints" / "last.ckpt"), _ckpt(last)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_cifar_recipes_use_channels_last(compose_train) -> None:
    """channels_last is `auto` in every CIFAR recipe (on where measured faster and safe: 1.15x
    step speed on an AVX-512 CPU, see benchmarks/results/plugin_overheads.json; the per-device
    decision is tested in test_device_choice.py) and changes no result beyond float rounding."""
    from cld_lightning.methods import NPID
    from cld_lightning.models import build_backbone

    recipes = sorted(p.stem for p in (Path(__file__).parents[1] / "conf/experiment").glob("cifar*"))
    assert len(recipes) == 8
    for name in recipes:
        assert compose_train(f"experiment={name}", tiny=False).method.channels_last == "auto", name

    def step(channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # float64: the same computation in either memory format (in float32 the deep BatchNorm
        # backward amplifies the formats' different summation orders to ~2 % of conv1's gradient)
        torch.manual_seed(0)
        backbone = build_backbone("cifar_resnet18", width=8).double()
        model = NPID(backbone, 16, {"num_clusters": 4}, num_views=2, channels_last=channels_last)
        model = model.double()
        gens = [torch.Generator().manual_seed(v) for v in (1, 2)]
        views = [torch.rand(8, 3, 32, 32, generator=g, dtype=torch.float64) for g in gens]
        loss = model.compute_loss((views, torch.zeros(8), torch.arange(8)), 0)[0]["loss"]
        loss.backward()
        return loss.detach(), model.backbone.conv1.weight.grad

    (loss_a, grad_a), (loss_b, grad_b) = step(False), step(True)
    assert grad_b.is_contiguous(memory_format=torch.channels_last)
    assert not grad_a.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-9, atol=1e-12)
