"""A Lightning callback for the benchmarks: wall time of every training batch, written as JSON
(``{"step_s": [...]}``) at the end of fit. Used through ``+callbacks.step_timer`` with
``benchmarks/`` on ``PYTHONPATH`` (``main_job_cpu_classes.py --compare-steps``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class StepTimer(pl.Callback):
    """Seconds from ``on_train_batch_start`` to ``on_train_batch_end``, per batch, to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, out: Any, batch: Any, i: int
    ) -> None:
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"step_s": self.times}))
