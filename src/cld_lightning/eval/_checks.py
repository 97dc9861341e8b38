"""Small input validators shared by the evaluation functions (clear errors, no deep tracebacks)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def as_feature_matrix(x: object, name: str) -> Tensor:
    """Return ``x`` as a 2-D floating tensor ``[N, D]`` or raise ``ValueError`` naming ``name``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N, D], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def as_label_vector(y: object, name: str, num_classes: int | None = None) -> Tensor:
    """Return ``y`` as a 1-D long tensor, optionally checking every value is in [0, num_classes)."""
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a 1-D torch.Tensor of labels, got {type(y).__name__}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    y = y.long()
    if num_classes is not None and y.numel() > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, num_classes={num_classes}), found values in [{lo}, {hi}]"
            )
    return y


def as_test_set(features: object, labels: object, num_classes: int) -> tuple[Tensor, Tensor]:
    """``(test_features [M, D], test_labels [M])`` of a labelled test set to measure accuracy on:
    labels in ``[0, num_classes)``, one per row, ``M >= 1``; else ``ValueError`` naming the input."""
    labels = as_label_vector(labels, "test_labels", num_classes)
    features = as_feature_matrix(features, "test_features")
    check_same_length(features, labels, "test_features", "test_labels")
    if labels.numel() == 0:
        raise ValueError("test_features must contain at least one row to measure accuracy, got 0")
    return features, labels


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int >= 1 or raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_positive_float(value: object, name: str) -> float:
    """Return ``value`` as a finite float > 0 or raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_same_length(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` when ``a`` and ``b`` differ in their first dimension."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {a.shape[0]} and {b.shape[0]}"
        )
