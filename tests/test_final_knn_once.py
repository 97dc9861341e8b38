"""`cld-train`'s final kNN: one pass over the data when fit already validated the final weights
(`max_epochs` a multiple of `check_val_every_n_epoch`), a separate `validate` otherwise; the
figures are the same either way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl

from cld_lightning.app.train import train


def _run(compose_train, fake_data_root, monkeypatch, every_n: int) -> tuple[dict, list[int]]:
    calls: list[int] = []
    real_validate = pl.Trainer.validate

    def counting_validate(self, *args, **kwargs):
        calls.append(int(self.global_step))
        return real_validate(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "validate", counting_validate)
    cfg = compose_train(
        "data=cifar10",
        f"paths.data_dir={fake_data_root}",
        "data.download=false",
        "backbone=small_cnn",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        f"trainer.check_val_every_n_epoch={every_n}",
        "final_knn=true",
        "baselines=false",
        "selection.enabled=false",
        "plots.enabled=false",
        "logger=none",
    )
    metrics = train(cfg)
    out_dir = Path(cfg.paths.output_dir)
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert saved["knn/top1"] == pytest.approx(metrics["knn/top1"])
    shutil.move(out_dir, out_dir.with_name(f"run_every_{every_n}"))  # the next run starts fresh
    return metrics, calls


def test_final_knn_reuses_the_last_validation(
    compose_train, fake_data_root, monkeypatch, one_torch_thread
) -> None:
    validated, calls_validated = _run(compose_train, fake_data_root, monkeypatch, every_n=1)
    assert calls_validated == []  # epoch 2 was validated at the final step: no second pass
    again, calls_again = _run(compose_train, fake_data_root, monkeypatch, every_n=3)
    assert calls_again == [4]  # never validated inside fit: one validate after it, at step 4
    # same seed, same weights: the reused figure is the one a separate pass computes
    assert validated["knn/top1"] == pytest.approx(again["knn/top1"], abs=1e-6)
    assert 0.0 <= validated["knn/top1"] <= 100.0
