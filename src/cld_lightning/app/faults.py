"""Fault handling: SIGTERM/SIGINT -> checkpoint at the next batch boundary, then a clean stop.

Cluster schedulers (SLURM preemption, ``scancel``, Kubernetes) send SIGTERM some time before
SIGKILL; Ctrl+C sends SIGINT. :class:`GracefulShutdown` turns either into a flag; at the end of the
current training batch (under gradient accumulation: of the current optimiser step) all ranks
agree (any rank flagged -> all stop), write ``last.ckpt`` into the run's checkpoint folder
(``trainer.save_checkpoint`` on every rank) and stop the trainer. Resume with
``ckpt_path=<dir>/last.ckpt``; :class:`~cld_lightning.app.checkpointing.LastCheckpoint` keeps
overwriting that same file in the resumed run, so it is always the newest state. A second signal of the same kind falls back to the previous
handler (a second Ctrl+C interrupts immediately).

Non-finite losses are handled by :class:`~cld_lightning.methods.base.SSLMethod` (synced skip).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger("cld_lightning.app.faults")
DEFAULT_SIGNALS = ("SIGTERM", "SIGINT")


def resolve_signals(names: tuple[str, ...] | list[str]) -> list[signal.Signals]:
    """Signal names -> ``signal.Signals`` (unknown names raise, naming the entry)."""
    out = []
    for name in names:
        sig = getattr(signal, str(name).upper(), None)
        if not isinstance(sig, signal.Signals):
            raise ValueError(f"faults.signals: unknown signal {name!r}")
        out.append(sig)
    return out


def checkpoint_dir(trainer: pl.Trainer, dirpath: str | os.PathLike[str] | None = None) -> Path:
    """``dirpath`` or the ModelCheckpoint folder or ``<default_root_dir>/checkpoints``."""
    if dirpath is not None:
        return Path(dirpath)
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "dirpath", None):
        return Path(cb.dirpath)  # type: ignore[arg-type]
    return Path(trainer.default_root_dir) / "checkpoints"


def at_optimizer_step_boundary(trainer: pl.Trainer, batch_idx: int) -> bool:
    """True when the batch that just ended was followed by an optimiser step (always, without
    gradient accumulation; else every ``accumulate_grad_batches``-th batch and the epoch's last)."""
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    if accumulate <= 1:
        return True
    last = bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
    return last or (batch_idx + 1) % accumulate == 0


class GracefulShutdown(pl.Callback):
    """Checkpoint and stop on SIGTERM/SIGINT (at the next training-batch boundary, on all ranks).

    Args:
        signals: signal names to handle.
        dirpath: checkpoint folder (default: the ModelCheckpoint's ``dirpath``).
        filename: checkpoint file name written on a signal.
    """

    def __init__(
        self,
        signals: tuple[str, ...] | list[str] = DEFAULT_SIGNALS,
        dirpath: str | None = None,
        filename: str = "last.ckpt",
    ) -> None:
        self.signals = resolve_signals(signals)
        self.dirpath = dirpath
        self.filename = filename
        self.received: int | None = None
        self.saved_path: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def interrupted(self) -> bool:
        """True once a signal made this callback stop training."""
        return self.saved_path is not None

    # -- handlers (installed after Lightning's own, which only broadcasts/ignores SIGTERM)
    def _handler(self, signum: int, frame: Any) -> None:
        if self.received == signum:  # second signal: previous behaviour (e.g. KeyboardInterrupt)
            prev = self._previous.get(signal.Signals(signum))
            self._restore()
            if callable(prev):
                prev(signum, frame)
            elif signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.received = signum
        log.warning(
            "received %s: saving a checkpoint at the end of this batch", signal.Signals(signum).name
        )

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("GracefulShutdown: not in the main thread, signal handlers not installed")
            return
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None
        self.saved_path = None
        self._install()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    # -- the batch boundary
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not at_optimizer_step_boundary(trainer, batch_idx):
            return  # mid-accumulation: gradients and pending updates are not in a checkpoint
        stop = self.received is not None
        if trainer.world_size > 1:  # any rank signalled -> every rank saves and stops
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if not stop or self.saved_path is not None:
            return
        path = checkpoint_dir(trainer, self.dirpath) / self.filename
        for cb in trainer.checkpoint_callbacks:  # a LastCheckpoint writing the same file owns it
            if getattr(cb, "path", None) == path:
                cb.best_model_path = str(path)  # type: ignore[attr-defined]
        trainer.save_checkpoint(path)
        self.saved_path = path
        for cb in trainer.checkpoint_callbacks:
            if hasattr(cb, "_last_global_step_saved"):
                cb._last_global_step_saved = trainer.global_step  # no second save of this step
        trainer.should_stop = True
        if trainer.is_global_zero:
            log.warning(
                "stopped by signal at global step %d; checkpoint: %s", trainer.global_step, path
            )
