"""Learning-rate schedule: linear warm-up then cosine decay, per optimiser step; run length."""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger("cld_lightning.schedule")


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, cosine: bool = True, min_factor: float = 0.0
) -> float:
    """LR multiplier at ``step``: ``(step+1)/warmup`` during warm-up, then half-cosine to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def total_training_steps(module: Any) -> int | None:
    """``trainer.estimated_stepping_batches`` when attached to a Trainer and finite, else None."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return None
    try:
        total = float(trainer.estimated_stepping_batches)
    except Exception:  # no datamodule yet / not fitting
        return None
    return int(total) if math.isfinite(total) else None


def optimizer_steps_per_epoch(trainer: Any) -> int | None:
    """Optimiser steps in one epoch: ``ceil(training batches / accumulate_grad_batches)``, as
    Lightning counts them for ``estimated_stepping_batches``; ``None`` when unknown (a loader
    without length). Sets up the training loader if needed, as ``estimated_stepping_batches``
    does (it does not for ``max_epochs=-1`` runs)."""
    fit_loop = getattr(trainer, "fit_loop", None)
    if getattr(trainer, "train_dataloader", None) is None and fit_loop is not None:
        fit_loop.setup_data()
    batches = float(getattr(trainer, "num_training_batches", math.inf))
    if not math.isfinite(batches) or batches <= 0:
        return None
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    return max(1, math.ceil(batches / accumulate))


def schedule_steps(trainer: Any, warmup_epochs: float, cosine: bool) -> tuple[int, int]:
    """``(total_steps, warmup_steps)`` of a run, from ``trainer.estimated_stepping_batches``.

    Warm-up is ``warmup_epochs`` epochs of optimiser steps, whether the run is bounded by
    ``max_epochs`` or by ``max_steps`` (``max_epochs=-1``), and whatever the accumulation.
    """
    total_f = float(trainer.estimated_stepping_batches)
    per_epoch = optimizer_steps_per_epoch(trainer)
    if per_epoch is None:  # no length: spread warm-up over the run's epochs, if it has any
        epochs = int(getattr(trainer, "max_epochs", None) or -1)
        if not math.isfinite(total_f) or epochs < 1:
            if warmup_epochs > 0:
                raise ValueError(
                    "method.warmup_epochs needs the length of an epoch; the training loader has "
                    "no length and trainer.max_epochs is not set: set method.warmup_epochs=0"
                )
            per_epoch = 0
        else:
            per_epoch = int(total_f) // epochs
    if not math.isfinite(total_f):
        if cosine:
            raise ValueError(
                "method.cosine needs a finite run: set trainer.max_epochs or trainer.max_steps "
                "(or method.cosine=false)"
            )
        total_f = float(2**62)
    total = int(total_f)
    warmup = int(round(warmup_epochs * per_epoch))
    if cosine and warmup >= total > 0:
        log.warning(
            "method.warmup_epochs=%s is %d optimiser steps, the whole run is %d: the learning rate "
            "never leaves warm-up",
            warmup_epochs,
            warmup,
            total,
        )
    return total, warmup
