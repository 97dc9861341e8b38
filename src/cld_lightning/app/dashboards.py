"""End-of-run dashboards: embedding and cluster-size plots (PNG in the run folder, and W&B).

Everything here runs on global rank 0 only and never changes training state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

WANDB_SUMMARIES = {
    "knn/top1": "max",
    "train/loss_epoch": "min",
    "cld/loss_epoch": "min",
    "cld/group_acc_epoch": "max",
    "selection/label_free_score": "max",
}


def wandb_loggers(loggers: list[Any]) -> list[Any]:
    return [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]


def define_wandb_metrics(loggers: list[Any]) -> None:
    """``define_metric`` summaries (best kNN top-1, lowest losses) on every W&B run."""
    for lg in wandb_loggers(loggers):
        run = lg.experiment
        run.define_metric("trainer/global_step")
        for name, summary in WANDB_SUMMARIES.items():
            run.define_metric(name, summary=summary)


@torch.no_grad()
def batch_cluster_sizes(model: Any, datamodule: Any, max_batches: int = 4) -> torch.Tensor | None:
    """Sizes of the local groups (both views) on a few training batches, for the histogram."""
    from cld_lightning.cld.kmeans import batch_kmeans

    if not getattr(model, "cld_enabled", False):
        return None
    was_training = model.training
    model.eval()
    sizes = []
    try:
        device = next(model.parameters()).device
        for i, batch in enumerate(datamodule.train_dataloader()):
            if i >= max_batches:
                break
            if hasattr(datamodule, "to_views"):  # augment_on=device yields uint8 images
                batch = datamodule.to_views(batch)
            views = batch[0]
            for v in views[:2]:
                g = model.group_features(model.features(v.to(device))).float()
                labels, _ = batch_kmeans(
                    g, model.cld_config.num_clusters, model.cld_config.num_iters
                )
                sizes.append(torch.bincount(labels, minlength=model.cld_config.num_clusters).cpu())
    finally:
        model.train(was_training)
    return torch.cat(sizes) if sizes else None


def write_plots(
    model: Any,
    datamodule: Any,
    out_dir: Path,
    loggers: list[Any],
    max_points: int = 2000,
    method: str = "tsne",
) -> dict[str, str]:
    """Embedding map of test images (legend: the data set's class names, where it has them) and
    the cluster-size histogram, as PNG (+ W&B images)."""
    from cld_lightning.eval import extract_features, plot_cluster_sizes, plot_embedding

    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    _, test_loader = datamodule.val_dataloader()
    z, y, _ = extract_features(model, test_loader)
    n = min(max_points, z.shape[0])
    emb = plot_dir / "embedding.png"
    plot_embedding(
        z[:n],
        y[:n],
        emb,
        method=method,
        title="test embedding (instance branch)",
        class_names=getattr(datamodule, "class_names", None) or None,  # legend: class names
    )
    written["plots/embedding"] = str(emb)
    sizes = batch_cluster_sizes(model, datamodule)
    if sizes is not None:
        hist = plot_dir / "cluster_sizes.png"
        plot_cluster_sizes(sizes, hist)
        written["plots/cluster_sizes"] = str(hist)
    for lg in wandb_loggers(loggers):
        import wandb

        payload: dict[str, Any] = {k: wandb.Image(v) for k, v in written.items()}
        if sizes is not None:
            payload["cld/cluster_size_hist_final"] = wandb.Histogram(sizes.numpy())
            payload["cld/empty_clusters_final"] = int((sizes == 0).sum())
        lg.experiment.log(payload)
    return written
