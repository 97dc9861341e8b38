"""Callbacks that ``cld-train`` subprocesses of the fault tests load by ``_target_``: a signal sent
to the process itself at a given step, optionally followed by a step that never ends."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class SignalAt(pl.Callback):
    """At the start of the batch of global step ``step``: send ``signal`` to this process, then
    (``stuck``) write ``marker`` and block for good: ``sleep`` (a Python sleep: handlers run) or
    ``c`` (a C call that signals do not interrupt, as a hung collective: handlers cannot run)."""

    def __init__(
        self, step: int, signal: str = "SIGTERM", stuck: str | None = None, marker: str = ""
    ) -> None:
        if stuck not in (None, "sleep", "c"):
            raise ValueError(f"stuck must be null, sleep or c, got {stuck!r}")
        self.step, self.signal, self.stuck, self.marker = step, signal, stuck, marker
        self.sent = False

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step or self.sent:
            return
        self.sent = True
        os.kill(os.getpid(), getattr(signal, self.signal))
        if self.stuck is None:
            return
        Path(self.marker).write_text("stuck")
        if self.stuck == "sleep":
            time.sleep(3600)
        else:  # locking a held default mutex again: blocks in C, no EINTR
            libc = ctypes.CDLL(None)
            mutex = ctypes.create_string_buffer(64)
            libc.pthread_mutex_lock(mutex)
            libc.pthread_mutex_lock(mutex)
