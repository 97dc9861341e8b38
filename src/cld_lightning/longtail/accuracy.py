"""Accuracy on many-, medium- and few-shot classes (groups: :mod:`cld_lightning.longtail.shots`).

A group's accuracy is the mean of the per-class accuracies of its classes that have test samples
(as in OLTR's ``shot_acc``; on a balanced test set it equals the sample accuracy of the group). A
group with no such class is NaN. ``overall`` is the plain top-1 over all test samples. All values
are percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cld_lightning.longtail.shots import (
    FEW_SHOT_MAX,
    GROUPS,
    MANY_SHOT_MIN,
    ShotGroups,
    ShotRule,
    shot_groups,
)


def per_class_accuracy(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per-class top-1 in percent, ``[num_classes]`` float64; NaN where a class has no sample."""
    correct = (pred == target).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, target, correct)
    counts = torch.bincount(target, minlength=num_classes).double()
    acc = 100.0 * hits / counts.clamp(min=1)
    return torch.where(counts > 0, acc, torch.full_like(acc, float("nan")))


def group_accuracy(per_class: Tensor, groups: ShotGroups) -> dict[str, float]:
    """Mean of the per-class accuracies (NaN = no test sample, skipped) of each group's classes;
    NaN for a group with no such class."""
    result: dict[str, float] = {}
    per_class = per_class.cpu()
    for name in GROUPS:
        accs = per_class[groups[name]]
        accs = accs[~accs.isnan()]
        result[name] = float(accs.mean()) if accs.numel() else float("nan")
    return result


def _labels(y: object, name: str, num_classes: int) -> Tensor:
    """``y`` as a 1-D long CPU tensor of labels in ``[0, num_classes)``; else ``ValueError``."""
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a 1-D torch.Tensor of labels, got {type(y).__name__}")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 1-D tensor of integer labels, got {tuple(y.shape)} {y.dtype}"
        )
    y = y.long().cpu()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, num_classes={num_classes}), "
            f"found values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


def shot_accuracy(
    pred: Tensor,
    target: Tensor,
    train_class_counts: Tensor | Sequence[int],
    many_threshold: int = MANY_SHOT_MIN,
    few_threshold: int = FEW_SHOT_MAX,
    rule: ShotRule = "auto",
) -> dict[str, float]:
    """Many/medium/few-shot and overall top-1 (percent; NaN for an empty group).

    Args:
        pred: ``[N]`` predicted labels, or ``[N, C]`` scores (argmax taken).
        target: ``[N]`` true labels in ``[0, C)``.
        train_class_counts: ``[C]`` training images per class (defines ``C``).
        many_threshold, few_threshold, rule: see :func:`cld_lightning.longtail.shot_groups`.
    """
    groups = shot_groups(train_class_counts, rule, many_threshold, few_threshold)
    num_classes = groups.num_classes
    if isinstance(pred, Tensor) and pred.dim() == 2:
        pred = pred.argmax(dim=1)
    pred = _labels(pred, "pred", num_classes)
    target = _labels(target, "target", num_classes)
    if pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"pred and target must have the same length, got {pred.shape[0]} and {target.shape[0]}"
        )
    if target.numel() == 0:
        raise ValueError("target must contain at least one sample, got 0")
    result = group_accuracy(per_class_accuracy(pred, target, num_classes), groups)
    result["overall"] = 100.0 * float((pred == target).double().mean())
    return result
