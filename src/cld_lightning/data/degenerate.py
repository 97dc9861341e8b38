"""Data settings that leave nothing to measure: classes emptied by subsetting the pretraining set
(an error under ``data.imbalance_ratio``, else a warning) and a one-class kNN memory (a warning:
every kNN and linear figure would be 100 %)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .errors import DataSizeError

#: settings that make a long-tailed pretraining set: an emptied class there is an error
LONG_TAIL_KEYS = ("data.imbalance_ratio", "data.split_file")


def _counts(targets: Tensor, num_classes: int) -> Tensor:
    t = torch.as_tensor(targets, dtype=torch.long)
    return torch.bincount(t[t >= 0], minlength=num_classes)[:num_classes]


def _class_list(classes: list[int], names: Sequence[str]) -> str:
    shown = [f"{c} ({names[c]})" if c < len(names) else str(c) for c in classes[:10]]
    return ", ".join(shown) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "")


def check_emptied_classes(
    name: str,
    source_targets: Tensor,
    train_targets: Tensor,
    num_classes: int,
    settings: dict[str, Any],
    class_names: Sequence[str] = (),
) -> None:
    """Classes with images in the source but none in the pretraining set built from it by
    ``settings`` (``{"data.imbalance_ratio": 100, "data.max_train_samples": 500}``, unset ones
    ``None``): a :class:`DataSizeError` when one of :data:`LONG_TAIL_KEYS` is set (the long-tail
    figures would be wrong), else a warning."""
    used = {k: v for k, v in settings.items() if v is not None}
    if not used:
        return
    before, after = _counts(source_targets, num_classes), _counts(train_targets, num_classes)
    emptied = [c for c in range(num_classes) if before[c] > 0 and after[c] == 0]
    if not emptied:
        return
    keys = " and ".join(f"{k}={v}" for k, v in used.items())
    message = (
        f"{name}: {keys} leave(s) {len(emptied)} of {num_classes} classes without a pretraining "
        f"image: {_class_list(emptied, class_names)}; lower the ratio or raise the sample count"
    )
    if any(settings.get(k) is not None for k in LONG_TAIL_KEYS):
        raise DataSizeError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def warn_one_class(name: str, memory_counts: Tensor) -> None:
    """Warn when the kNN memory holds one class (or none): every kNN figure would be 100 %."""
    present = int((torch.as_tensor(memory_counts) > 0).sum())
    if present <= 1:
        warnings.warn(
            f"{name}: the labelled pretraining images are of {present} class: every kNN and "
            "linear-probe accuracy will be 100 % (nothing to tell apart); use a data set with "
            "several labelled classes to evaluate",
            RuntimeWarning,
            stacklevel=3,
        )
