"""A 2-job `cld-train -m` sweep with W&B offline: two runs in one W&B group, metrics and plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cld_lightning.app.loggers import resolve_wandb_mode
from tests.helpers import run_cld_train

TINY_RUN = [
    "experiment=fashion_mnist_npid_cld",
    "data.max_train_samples=null",
    "data.batch_size=16",
    "data.num_workers=0",
    "backbone.width=4",
    "trainer.max_epochs=1",
    "cld.num_clusters=4",
    "method.knn_k=5",
    "plots.method=pca",
    "trainer.enable_progress_bar=false",
    "selection.num_images=32",
    "trainer.log_every_n_steps=1",
]


def run_cli(args: list[str], env_extra: dict[str, str], timeout: int = 600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(env_extra)
    return run_cld_train(*args, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory) -> Path:
    from cld_lightning.data import synthetic

    root = tmp_path_factory.mktemp("fmnist")
    synthetic.write_fake_fashion_mnist(root, n_train=64, n_test=48)
    return root


def test_wandb_mode_offline_without_credentials(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "")  # an empty value must not crash wandb
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled"


def test_wandb_offline_when_host_unreachable_online_when_reachable(monkeypatch) -> None:
    # the real connection check against local sockets (no stub deciding the answer): credentials
    # and a host that refuses -> offline; the same credentials and a listening host -> online
    import socket

    import cld_lightning.app.loggers as lg

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        listening = server.getsockname()
        with socket.socket() as closed:  # a port that was bound once and is now closed
            closed.bind(("127.0.0.1", 0))
            refused = closed.getsockname()
        monkeypatch.setattr(lg, "WANDB_HOST", refused)
        assert lg.resolve_wandb_mode() == "offline"
        monkeypatch.setattr(lg, "WANDB_HOST", listening)
        assert lg.resolve_wandb_mode() == "online"
        assert lg.resolve_wandb_mode("offline") == "offline"  # an explicit request still wins
        monkeypatch.delenv("WANDB_API_KEY")
        monkeypatch.setenv("NETRC", "/nonexistent/netrc")
        assert lg.resolve_wandb_mode() == "offline"  # reachable, but no credentials


def test_two_job_multirun_grouped_offline_runs_with_plots(
    fmnist_root: Path, tmp_path: Path, monkeypatch
) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            *TINY_RUN,
            f"paths.data_dir={fmnist_root}",
            "logger=many",
            "cld.weight=0.5,1.0",
            f"hydra.sweep.dir={sweep}",
        ],
        {"WANDB_SILENT": "true", "NETRC": str(tmp_path / "none")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    for job, run in zip(("0", "1"), runs, strict=True):
        assert run.parts[-3] == job
        blob = next(run.glob("*.wandb")).read_bytes()
        assert f"fashion_mnist_npid_cld-{sweep.name}".encode() in blob  # one group per multirun
        for key in (
            b"knn/top1",
            b"cld/loss",
            b"cld/group_acc",
            b"selection/label_free_score",
            b"selection/rankme_feature",  # label-free scores on the backbone feature
            b"lr-SGD",
            b"cld/empty_clusters",
            b"knn/pixel_top1",  # the baselines reach the W&B summary
            b"knn/random_init_top1",
            b"knn/random_init_backbone_top1",
        ):
            assert key in blob, key
        media = run / "files" / "media" / "images" / "plots"
        assert any(media.glob("embedding_*.png")) and any(media.glob("cluster_sizes_*.png"))
        assert (sweep / job / "plots" / "embedding.png").is_file()
        assert (sweep / job / "plots" / "cluster_sizes.png").is_file()
    # cld-report on the multirun: its two configurations, and the summary in W&B (runs logged there)
    from cld_lightning.report.cli import main as report_main

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert report_main([str(sweep)]) == 0
    report = json.loads((sweep / "report" / "report.json").read_text())
    assert [c["config"] for c in report["configs"]] == ["cld.weight=0.5", "cld.weight=1.0"]
    assert all(c["metrics"]["knn/top1"]["n"] == 1 for c in report["configs"])
    assert report["wandb_mode"] == "offline"
    blob = next((sweep / "report").glob("wandb/offline-run-*/*.wandb")).read_bytes()
    assert b"report/label_free_pick" in blob and b"report/best_config" in blob


def test_optuna_search_config_composes(compose_train) -> None:
    from cld_lightning.app.config_check import check_train_config

    cfg = compose_train("hparams_search=cld_optuna", "experiment=fashion_mnist_npid_cld")
    assert cfg.optimized_metric == "selection/label_free_score"
    check_train_config(cfg)


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials(fmnist_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    proc = run_cli(
        [
            "-m",
            "hparams_search=cld_optuna",
            *TINY_RUN,
            f"paths.data_dir={fmnist_root}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=2",
            f"hydra.sweep.dir={sweep}",
            "logger=csv",
        ],
        {"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "optimization_results.yaml").is_file()
