"""`cld-train`'s label-free scores at the end of training: LiDAR on q views lands in metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cld_lightning.app.train import train


def test_lidar_on_q_views_in_metrics_json(compose_train, fake_data_root, one_torch_thread) -> None:
    cfg = compose_train(
        "data=cifar10",
        f"paths.data_dir={fake_data_root}",
        "data.download=false",
        "backbone=small_cnn",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "final_knn=false",
        "baselines=false",
        "plots.enabled=false",
        "selection.num_images=24",
        "selection.num_clusters=3",
        "selection.lidar_views=3",
        "selection.score=lidar",
    )
    metrics = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    for key in ("selection/lidar", "selection/lidar_feature", "selection/retrieval_top1"):
        assert key in saved, key
    # at most min(D, n - 1) = 23 surrogate-class directions, at least one
    assert 1.0 <= saved["selection/lidar"] <= 23.0 + 1e-3
    assert 1.0 <= saved["selection/lidar_feature"] <= 23.0 + 1e-3
    assert saved["selection/label_free_score"] == saved["selection/lidar"]
    assert metrics["selection/lidar"] == pytest.approx(saved["selection/lidar"])
