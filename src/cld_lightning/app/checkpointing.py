"""Checkpoint retention: ``last.ckpt`` (always the newest state) plus a kept checkpoint every N
epochs (``callbacks.checkpoint``, a plain ``ModelCheckpoint``).

``LastCheckpoint`` overwrites ``last.ckpt`` in place at every save, in a fresh run and in a resumed
one: Lightning's ``save_last`` writes ``last-v1.ckpt`` when ``last.ckpt`` exists but is not the
file it wrote itself (e.g. the one a SIGTERM left), so that resuming ``last.ckpt`` twice would
rewind. :class:`~cld_lightning.app.faults.GracefulShutdown` writes the same file on a signal.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


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
