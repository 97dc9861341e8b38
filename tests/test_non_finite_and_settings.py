"""Issue 26: a diverging run (method.lr=1e30) stops with one line and no k-means/SVD traceback;
degenerate settings are named (k >= batch size warns; trainer.* values of the wrong type)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from cld_lightning.app.config_check import ConfigError, check_train_config
from cld_lightning.cld.kmeans import batch_kmeans
from cld_lightning.data.synthetic import write_fake_imagefolder
from tests.helpers import imagefolder_train_args


def _train(root, run, *extra: str) -> tuple[int, str]:
    args = [
        *imagefolder_train_args(root, run),
        "cld.kmeans_init=kmeans++",
        "method.lr=1e30",
        "final_knn=true",
        "baselines=true",
        "selection.enabled=true",
        *extra,
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "cld_lightning.app.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("limit", [3, 100], ids=["guard-stops", "diverged-at-end"])
def test_lr_1e30_stops_with_one_line(tmp_path, limit: int) -> None:
    root = tmp_path / "d"
    write_fake_imagefolder(root, classes=2, per_class=8, size=16, splits=("train", "test"))
    rc, out = _train(
        root,
        tmp_path / "run",
        "trainer.max_epochs=4",
        f"callbacks.non_finite.max_consecutive_skips={limit}",
        "selection.num_images=16",
    )
    assert rc != 0
    assert "Traceback" not in out and "probability tensor" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("cld-train: training stopped: ")]
    assert len(lines) == 1, out[-3000:]
    assert "method.lr too high" in lines[0]
    assert str(tmp_path / "run" / "checkpoints" / "last.ckpt") in lines[0]
    if limit == 3:
        assert "non-finite (NaN/inf) 3 steps in a row" in lines[0]
    else:  # fewer skips than the limit: the final evaluation would see NaN embeddings
        assert "embeddings are non-finite" in lines[0]
    assert "step skipped" in out  # each skip was logged as it happened
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_kmeans_pp_never_samples_from_non_finite_features() -> None:
    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    labels, _ = batch_kmeans(x, 3, init="kmeans++", generator=torch.Generator().manual_seed(0))
    assert labels.shape == (6,)
    x = torch.full((5, 2), float("inf"))
    batch_kmeans(x, 2, init="kmeans++")  # no "probability tensor contains inf/nan"


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.max_steps=abc", "trainer.max_steps expected int, got 'abc' (str)"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs expected int | null, got 1.5"),
        ("trainer.precision=1.5", "trainer.precision expected int | str | null, got 1.5"),
        ("trainer.enable_progress_bar=3", "trainer.enable_progress_bar expected bool | null"),
    ],
)
def test_trainer_type_errors_name_the_key(compose_train, override: str, message: str) -> None:
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    assert message in str(err.value)


def test_trainer_values_of_the_right_kind_pass(compose_train) -> None:
    check_train_config(
        compose_train(
            "trainer.precision=16-mixed",
            "trainer.limit_train_batches=0.5",
            "trainer.max_time=00:01:00:00",
            "trainer.deterministic=warn",
        )
    )


def test_clusters_at_least_batch_size_warn_once(compose_train, caplog) -> None:
    cfg = compose_train("cld.num_clusters=120", "data.batch_size=64")
    with caplog.at_level(logging.WARNING, logger="cld_lightning.app.config_check"):
        check_train_config(cfg)
    hits = [r.getMessage() for r in caplog.records if "cld.num_clusters" in r.getMessage()]
    assert len(hits) == 1
    assert "cld.num_clusters=120 >= data.batch_size=64" in hits[0] and "56 or more" in hits[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cld_lightning.app.config_check"):
        check_train_config(compose_train("cld.num_clusters=10", "data.batch_size=64"))
        check_train_config(compose_train("cld.num_clusters=120", "data.batch_size=64", "cld=off"))
    assert not [r for r in caplog.records if "cld.num_clusters" in r.getMessage()]
