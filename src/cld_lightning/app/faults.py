"""Fault handling: SIGTERM/SIGINT -> checkpoint at the next batch boundary, then a clean stop.

Cluster schedulers (SLURM preemption, ``scancel``, Kubernetes) send SIGTERM some time before
SIGKILL; Ctrl+C sends SIGINT. :class:`GracefulShutdown` turns either into a flag; at the end of the
current training batch (under gradient accumulation: of the current optimiser step) all ranks
agree (any rank flagged -> all stop), write ``last.ckpt`` into the run's checkpoint folder
(``trainer.save_checkpoint`` on every rank) and stop the trainer. Resume with
``ckpt_path=auto`` (or ``ckpt_path=<dir>/last.ckpt``);
:class:`~cld_lightning.app.checkpointing.LastCheckpoint` keeps overwriting that same file in the
resumed run, so it is always the newest state. ``cld-train`` then exits with code 128 + the
signal's number (:attr:`GracefulShutdown.exit_code`: 143 for SIGTERM, 130 for SIGINT), so
a ``cld-eval`` chained with ``&&`` does not run and a ``-m`` sweep starts no further job. A second
SIGTERM/SIGINT before that exits at once with the same convention (``os._exit``, no checkpoint:
the previous ``last.ckpt`` stays), also when the step never ends (a hung collective).

Non-finite losses are skipped by :class:`~cld_lightning.methods.base.SSLMethod` (synced over
ranks; weights, optimiser state and forward-pass buffers left as they were); :class:`NonFiniteGuard`
stops the run after ``max_consecutive_skips`` skips in a row, naming the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
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


def signal_exit_code(signum: int) -> int:
    """The exit code of a run stopped by signal ``signum``: 128 + its number (shell convention)."""
    return 128 + int(signum)


def exit_now(signum: int) -> None:
    """Exit this process at once with :func:`signal_exit_code` (``os._exit``: no handler, no
    cleanup, no checkpoint), after one line on stderr."""
    name = signal.Signals(signum).name
    code = signal_exit_code(signum)
    with contextlib.suppress(OSError):
        os.write(
            2,
            f"second signal ({name}): exiting now without a checkpoint, exit code {code} (the "
            "previous last.ckpt is kept)\n".encode(),
        )
    os._exit(code)


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
        self._wakeup: tuple[socket.socket, socket.socket, int] | None = None

    @property
    def interrupted(self) -> bool:
        """True once a signal made this callback stop training."""
        return self.saved_path is not None

    @property
    def exit_code(self) -> int:
        """128 + the number of the signal received (143 SIGTERM, 130 SIGINT); 0 without one."""
        return signal_exit_code(self.received) if self.received is not None else 0

    # -- handlers (installed after Lightning's own, which only broadcasts/ignores SIGTERM)
    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # second signal: out now (the step may never end)
            exit_now(signum)
        self.received = signum
        log.warning(
            "received %s: saving a checkpoint at the end of this batch (a second signal exits "
            "at once, without one)",
            signal.Signals(signum).name,
        )

    def _watch_second_signal(self) -> None:
        """Exit on a second signal even while the main thread is stuck in C code (a hung
        collective: Python handlers run only when it returns): every signal's byte arrives on a
        wake-up socket (``signal.set_wakeup_fd``), read by a thread that exits at the second."""
        if self._wakeup is not None:
            return
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        try:
            old = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):  # not the main thread
            reader.close()
            writer.close()
            return
        self._wakeup = (reader, writer, old)
        ours = {int(s) for s in self.signals}

        def watch() -> None:
            seen = 0
            while True:
                try:
                    data = reader.recv(1)
                except OSError:
                    return
                if not data:
                    return
                if data[0] in ours:
                    seen += 1
                    if seen >= 2:
                        exit_now(data[0])

        threading.Thread(target=watch, name="second-signal", daemon=True).start()

    def _stop_watching(self) -> None:
        if self._wakeup is None:
            return
        reader, writer, old = self._wakeup
        self._wakeup = None
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(old)
        with contextlib.suppress(OSError):
            reader.shutdown(socket.SHUT_RDWR)
        reader.close()
        writer.close()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("GracefulShutdown: not in the main thread, signal handlers not installed")
            return
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)
        self._watch_second_signal()

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._stop_watching()
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


class NonFiniteGuard(pl.Callback):
    """Stop training after ``max_consecutive_skips`` non-finite (skipped) steps in a row.

    The method skips each such step on every rank (``consecutive_skips`` counts them, the same on
    every rank); this raises :class:`~cld_lightning.app.errors.NonFiniteTrainingError`, one line
    naming the count, the likely causes and the last checkpoint written (whose weights were
    finite: a skipped step changes nothing). No checkpoint is written at the stop.

    Args:
        max_consecutive_skips: the limit (>= 1); ``null`` = never stop.
    """

    def __init__(self, max_consecutive_skips: int | None = 10) -> None:
        if max_consecutive_skips is not None and (
            isinstance(max_consecutive_skips, bool)
            or not isinstance(max_consecutive_skips, int)
            or max_consecutive_skips < 1
        ):
            raise ValueError(
                "callbacks.non_finite.max_consecutive_skips must be an integer >= 1 or null, "
                f"got {max_consecutive_skips!r}"
            )
        self.max_consecutive_skips = max_consecutive_skips

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        skipped = int(getattr(pl_module, "skipped_steps", 0))
        if skipped and trainer.is_global_zero:
            log.warning(
                "%d training step(s) were skipped (non-finite loss), %d of them the last in a "
                "row; see train/skipped_steps",
                skipped,
                int(getattr(pl_module, "consecutive_skips", 0)),
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        skips = int(getattr(pl_module, "consecutive_skips", 0))
        if self.max_consecutive_skips is None or skips < self.max_consecutive_skips:
            return
        from cld_lightning.app.checkpointing import newest_checkpoint
        from cld_lightning.app.errors import NonFiniteTrainingError

        ckpt = newest_checkpoint(trainer) or "none written yet"
        raise NonFiniteTrainingError(
            f"the loss was non-finite (NaN/inf) {skips} steps in a row (at global step "
            f"{trainer.global_step}; limit callbacks.non_finite.max_consecutive_skips="
            f"{self.max_consecutive_skips}): likely method.lr too high or NaN/inf in the input "
            f"data; the skipped steps changed nothing; last good checkpoint: {ckpt}"
        )


class CheckpointOnFailedValidation(pl.Callback):
    """Write ``last.ckpt`` when validation fails after a finished training epoch.

    Lightning validates at the end of an epoch *before* ``on_train_epoch_end``, where
    :class:`~cld_lightning.app.checkpointing.LastCheckpoint` saves: without this, a corrupt test
    image would cost the epoch's checkpoint. The checkpoint resumes at the next epoch (that
    epoch's validation is lost). One process only: under DDP the other ranks may wait in a
    collective, so nothing is written (a warning says so).

    Args:
        dirpath: checkpoint folder (default: the ModelCheckpoint's ``dirpath``).
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.saved_path: Path | None = None

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        from cld_lightning.app.errors import NonFiniteTrainingError

        loop = trainer.fit_loop.epoch_loop
        finished_epoch = bool(loop.batch_progress.is_last_batch) or loop.done
        if (
            trainer.state.fn != "fit"
            or not trainer.validating
            or trainer.sanity_checking
            or not finished_epoch
            or isinstance(exception, NonFiniteTrainingError | KeyboardInterrupt)
        ):
            return
        if trainer.world_size > 1:
            log.warning("validation failed under DDP: the epoch's checkpoint was not written")
            return
        path = checkpoint_dir(trainer, self.dirpath) / self.filename
        trainer.save_checkpoint(path)
        self.saved_path = path
        log.warning(
            "validation failed after epoch %d's training (global step %d); its checkpoint was "
            "written: resume with ckpt_path=%s",
            trainer.current_epoch,
            trainer.global_step,
            path,
        )
