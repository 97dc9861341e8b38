"""``CLDCallback``: what needs no gradient — the λ schedule and cluster statistics.

Owns no parameters and no state that needs checkpointing (λ is recomputed from the epoch and
batch index every step). Per step the mixin itself logs ``cld/loss``, ``cld/group_acc``,
``cld/weight``, ``cld/cluster_size_max`` and ``cld/empty_clusters``; per epoch this callback logs
``cld/epoch_cluster_size_mean_nonempty``, ``cld/epoch_cluster_size_max``,
``cld/epoch_empty_clusters`` (mean number of empty clusters per view and step) and
``cld/epoch_empty_cluster_frac``, plus a W&B histogram of cluster sizes. ``CLDCallback`` is a ``pytorch_lightning.Callback``; for ``lightning.pytorch``
build the same callback with ``callback_class(lightning.pytorch.Callback)``.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from cld_lightning.modules.distributed import destroy_process_group_at_exit


def warmup_weight(target: float, progress_epochs: float, warmup_epochs: float) -> float:
    """Linear λ warm-up: ``λ_t = λ · min(1, t / warmup_epochs)`` (``warmup_epochs=0``: constant)."""
    if warmup_epochs <= 0:
        return target
    return target * min(1.0, max(0.0, progress_epochs) / warmup_epochs)


class CLDCallbackLogic:
    """Namespace-free callback body: λ warm-up each step, cluster-size statistics each epoch."""

    def __init__(self, warmup_epochs: float | None = None, log_histogram_every_n_epochs: int = 1):
        self.warmup_epochs = warmup_epochs
        self.log_histogram_every_n_epochs = log_histogram_every_n_epochs
        self._target_weight: float | None = None
        self._sizes: list[torch.Tensor] = []

    def _warmup(self, pl_module: Any) -> float:
        if self.warmup_epochs is not None:
            return float(self.warmup_epochs)
        return float(getattr(getattr(pl_module, "cld_config", None), "warmup_epochs", 0.0))

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        destroy_process_group_at_exit()  # a user's own module: a clean exit for every rank

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if getattr(pl_module, "cld_enabled", False):
            self._target_weight = float(pl_module.cld_config.weight)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._target_weight is None:
            return
        n = float(getattr(trainer, "num_training_batches", 1) or 1)
        steps_per_epoch = max(1, int(n)) if math.isfinite(n) else 1  # inf: iterable data sets
        progress = trainer.current_epoch + batch_idx / steps_per_epoch
        pl_module.cld_weight = warmup_weight(self._target_weight, progress, self._warmup(pl_module))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = getattr(pl_module, "last_cld_output", None)
        # automatic optimisation hands `{}` when training_step returned None (a skipped step)
        skipped = getattr(pl_module, "automatic_optimization", True) and outputs in (None, {})
        if out is not None and not skipped:
            self._sizes.append(torch.stack([s.detach().cpu() for s in out.cluster_sizes]))
        if out is not None:
            pl_module.last_cld_output = None  # consumed: never count a stale output twice

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._sizes:
            return
        per_view = torch.cat(self._sizes).float()  # [steps * views, K]
        self._sizes.clear()
        sizes = per_view.flatten()
        pl_module.log_dict(
            {
                "cld/epoch_cluster_size_mean_nonempty": sizes[sizes > 0].mean(),
                "cld/epoch_cluster_size_max": sizes.max(),
                "cld/epoch_empty_clusters": (per_view == 0).sum(dim=1).float().mean(),
                "cld/epoch_empty_cluster_frac": (sizes == 0).float().mean(),
            },
            sync_dist=True,
        )
        if trainer.current_epoch % max(1, self.log_histogram_every_n_epochs) == 0:
            self._log_histogram(trainer, sizes)

    def _log_histogram(self, trainer: Any, sizes: torch.Tensor) -> None:
        if getattr(trainer, "global_rank", 0) != 0:
            return
        for logger in getattr(trainer, "loggers", []):
            experiment = getattr(logger, "experiment", None)
            if type(logger).__name__ == "WandbLogger" and experiment is not None:
                import wandb

                experiment.log(
                    {
                        "cld/cluster_size_hist": wandb.Histogram(sizes.numpy()),
                        "trainer/global_step": trainer.global_step,
                    }
                )


def callback_class(base: type) -> type:
    """Build ``CLDCallback`` on another Lightning namespace's ``Callback`` base class."""
    return type("CLDCallback", (CLDCallbackLogic, base), {})


class CLDCallback(CLDCallbackLogic, pl.Callback):
    """λ warm-up (``cld.warmup_epochs``) and cluster-size statistics for ``pytorch_lightning``."""
