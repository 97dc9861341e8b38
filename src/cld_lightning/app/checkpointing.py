"""Checkpoint retention: ``last.ckpt`` (always the newest state) plus a kept checkpoint every N
epochs (``callbacks.checkpoint``, a plain ``ModelCheckpoint``).

``LastCheckpoint`` overwrites ``last.ckpt`` in place at every save, in a fresh run and in a resumed
one: Lightning's ``save_last`` writes ``last-v1.ckpt`` when ``last.ckpt`` exists but is not the
file it wrote itself (e.g. the one a SIGTERM left), so that resuming ``last.ckpt`` twice would
rewind. :class:`~cld_lightning.app.faults.GracefulShutdown` writes the same file on a signal.

Every checkpoint goes through :class:`SafeCheckpointIO` (installed by ``cld-train`` and by
``LastCheckpoint``): written atomically (temporary file in the same folder, ``fsync``, rename: a
failed write leaves the previous ``last.ckpt`` intact) and read with the safe reader
(``weights_only``; nothing in a checkpoint can run code unless ``trust_checkpoint`` is set).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from cld_lightning.modules.checkpoint_io import atomic_save, load_checkpoint


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/<filename>.ckpt``, overwritten at every save (no version suffix, no monitor).

    Args:
        dirpath: checkpoint folder.
        filename: file name without ``.ckpt`` (``last``).
        every_n_epochs: save at the end of every N-th epoch (default 1).
        every_n_train_steps: save every N optimiser steps instead (long epochs).
        train_time_interval: or every time interval (``datetime.timedelta``).
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str = "last",
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
    ) -> None:
        if every_n_epochs is None and every_n_train_steps is None and train_time_interval is None:
            every_n_epochs = 1
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            # at the end of every N-th training epoch, whether validation ran in it or not
            # (Lightning's default saves after validation only when validation runs less often
            # than every epoch: check_val_every_n_epoch=7 would leave last.ckpt 6 epochs stale)
            save_on_train_epoch_end=True if every_n_epochs else None,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        use_safe_checkpoint_io(trainer)

    @property
    def path(self) -> Path | None:
        """Where ``last.ckpt`` is written (``None`` before the folder is known)."""
        if self.dirpath is None:
            return None
        return Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"


def newest_checkpoint(trainer: pl.Trainer) -> str:
    """The most recently written checkpoint file of any ModelCheckpoint ('' if none)."""
    paths: list[Any] = []
    for cb in trainer.checkpoint_callbacks:
        paths += [getattr(cb, "best_model_path", ""), getattr(cb, "last_model_path", "")]
        if isinstance(cb, LastCheckpoint) and cb.path is not None:
            paths.append(cb.path)
    found = [Path(p) for p in paths if p and Path(p).is_file()]
    return str(max(found, key=lambda p: p.stat().st_mtime_ns)) if found else ""


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic saves
    (:func:`~cld_lightning.modules.checkpoint_io.atomic_save`) and safe loads
    (:func:`~cld_lightning.modules.checkpoint_io.load_checkpoint`: a file holding more than tensors
    and containers is refused, one line naming it). Remote paths (``scheme://``) are Lightning's,
    read with ``weights_only`` too.

    Args:
        trust: unpickle everything on load (only for files you trust: ``trust_checkpoint``).
    """

    def __init__(self, trust: bool = False) -> None:
        self.trust = bool(trust)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        trust = self.trust if weights_only is None else not weights_only
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only=not trust)
        # not memory-mapped: the optimiser would keep file-backed tensors as its state
        return load_checkpoint(path, trust=trust, map_location=map_location or "cpu", mmap=False)


def use_safe_checkpoint_io(trainer: pl.Trainer, trust: bool | None = None) -> None:
    """Give ``trainer`` a :class:`SafeCheckpointIO` in place of Lightning's default IO (another
    plugin is left alone); ``trust`` (when given) sets the installed one's ``trust``."""
    strategy = trainer.strategy
    current = strategy.checkpoint_io
    if type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = SafeCheckpointIO(trust=bool(trust))
    elif isinstance(current, SafeCheckpointIO) and trust is not None:
        current.trust = bool(trust)
