"""Long-tail evaluation: accuracy on many-, medium- and few-shot classes.

Groups follow the OLTR / Decoupling convention (CLD.md §3) on the *training* class counts:
many-shot ``n_c > 100``, medium-shot ``20 <= n_c <= 100``, few-shot ``n_c < 20``. This module is
the one home of that split (:func:`shot_groups`, thresholds :data:`MANY_SHOT_MIN` and
:data:`FEW_SHOT_MAX`) and of the test whether a training set is long-tailed
(:func:`is_long_tailed`); ``cld_lightning.data.long_tail.shot_groups`` lists its classes. A group's
accuracy is the mean of the per-class accuracies of its classes that have test samples (as in
OLTR's ``shot_acc``; on a balanced test set it equals the sample accuracy of the group). A group
with no such class is reported as NaN. ``overall`` is the plain top-1 over all test samples.
All values are percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cld_lightning.eval._checks import as_label_vector, check_same_length
from cld_lightning.eval.knn import per_class_accuracy

MANY_SHOT_MIN = 100  # many-shot: strictly more training images than this
FEW_SHOT_MAX = 20  # few-shot: strictly fewer training images than this
# long-tailed: the largest class has more than this many times the images of the smallest
# (CIFAR-LT uses ρ >= 10; a mildly unbalanced set such as ImageNet, ρ ≈ 1.8, is not long-tailed)
LONG_TAIL_MIN_RATIO = 3


def shot_groups(
    train_class_counts: Tensor | Sequence[int],
    many_threshold: int = MANY_SHOT_MIN,
    few_threshold: int = FEW_SHOT_MAX,
) -> dict[str, Tensor]:
    """Boolean class masks ``{"many", "medium", "few"}`` from per-class training counts."""
    counts = torch.as_tensor(train_class_counts)
    if counts.dim() != 1 or counts.is_floating_point() or counts.dtype == torch.bool:
        raise ValueError(
            f"train_class_counts must be a 1-D sequence of integer counts, got {tuple(counts.shape)} "
            f"{counts.dtype}"
        )
    if counts.numel() and int(counts.min()) < 0:
        raise ValueError("train_class_counts must be >= 0")
    many = counts > many_threshold
    few = counts < few_threshold
    return {"many": many, "medium": ~many & ~few, "few": few}


def is_long_tailed(
    train_class_counts: Tensor | Sequence[int], min_ratio: float = LONG_TAIL_MIN_RATIO
) -> bool:
    """True when ``max(n_c) > min_ratio · max(1, min(n_c))``: report many/medium/few-shot
    accuracy for this training set (online kNN; ``cld-eval`` with ``long_tail=auto``)."""
    counts = torch.as_tensor(train_class_counts)
    if counts.numel() == 0:
        return False
    return bool(counts.max() > min_ratio * counts.min().clamp_min(1))


def shot_accuracy(
    pred: Tensor,
    target: Tensor,
    train_class_counts: Tensor | Sequence[int],
    many_threshold: int = MANY_SHOT_MIN,
    few_threshold: int = FEW_SHOT_MAX,
) -> dict[str, float]:
    """Many/medium/few-shot and overall top-1 (percent; NaN for an empty group).

    Args:
        pred: ``[N]`` predicted labels, or ``[N, C]`` scores (argmax taken).
        target: ``[N]`` true labels in ``[0, C)``.
        train_class_counts: ``[C]`` training images per class (defines ``C``).
    """
    counts = torch.as_tensor(train_class_counts)
    groups = shot_groups(counts, many_threshold, few_threshold)
    num_classes = counts.numel()
    if isinstance(pred, Tensor) and pred.dim() == 2:
        pred = pred.argmax(dim=1)
    pred = as_label_vector(pred, "pred", num_classes).cpu()
    target = as_label_vector(target, "target", num_classes).cpu()
    check_same_length(pred, target, "pred", "target")
    if target.numel() == 0:
        raise ValueError("target must contain at least one sample, got 0")
    per_class = per_class_accuracy(pred, target, num_classes)
    result: dict[str, float] = {}
    for name, mask in groups.items():
        accs = per_class[mask.cpu()]
        accs = accs[~accs.isnan()]
        result[name] = float(accs.mean()) if accs.numel() else float("nan")
    result["overall"] = 100.0 * float((pred == target).double().mean())
    return result
