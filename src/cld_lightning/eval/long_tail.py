"""Long-tail evaluation: accuracy on many-, medium- and few-shot classes.

The groups come from :func:`cld_lightning.shots.shot_groups` (the one home of the split, shared
with the data layer; re-exported here): the paper's thresholds on the *training* class counts
(many-shot ``n_c > 100``, medium-shot ``20 <= n_c <= 100``, few-shot ``n_c < 20``) where they give
meaningful groups, else thirds of the classes sorted by count (rule: :mod:`cld_lightning.shots`,
``docs/EVALUATION.md``). This module is the home of the test whether a training set is
long-tailed (:func:`is_long_tailed`). A group's accuracy is the mean of the per-class accuracies
of its classes that have test samples (as in OLTR's ``shot_acc``; on a balanced test set it equals
the sample accuracy of the group). A group with no such class is NaN. ``overall`` is the plain
top-1 over all test samples. All values are percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cld_lightning.eval._checks import as_label_vector, check_same_length
from cld_lightning.eval.knn import per_class_accuracy
from cld_lightning.shots import (  # noqa: F401 (re-exported: the split's public home in eval)
    FEW_SHOT_MAX,
    GROUPS,
    MANY_SHOT_MIN,
    PAPER_SCALE_MIN_HEAD,
    ShotGroups,
    ShotRule,
    paper_rule_applies,
    shot_groups,
)

# long-tailed: the largest class has more than this many times the images of the smallest
# (CIFAR-LT uses ρ >= 10; a mildly unbalanced set such as ImageNet, ρ ≈ 1.8, is not long-tailed)
LONG_TAIL_MIN_RATIO = 3


def is_long_tailed(
    train_class_counts: Tensor | Sequence[int], min_ratio: float = LONG_TAIL_MIN_RATIO
) -> bool:
    """True when ``max(n_c) > min_ratio · max(1, min(n_c))``: report many/medium/few-shot
    accuracy for this training set (online kNN; ``cld-eval`` with ``long_tail=auto``)."""
    counts = torch.as_tensor(train_class_counts)
    if counts.numel() == 0:
        return False
    return bool(counts.max() > min_ratio * counts.min().clamp_min(1))


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
        many_threshold, few_threshold, rule: see :func:`cld_lightning.shots.shot_groups`.
    """
    groups = shot_groups(train_class_counts, rule, many_threshold, few_threshold)
    num_classes = groups.num_classes
    if isinstance(pred, Tensor) and pred.dim() == 2:
        pred = pred.argmax(dim=1)
    pred = as_label_vector(pred, "pred", num_classes).cpu()
    target = as_label_vector(target, "target", num_classes).cpu()
    check_same_length(pred, target, "pred", "target")
    if target.numel() == 0:
        raise ValueError("target must contain at least one sample, got 0")
    result = group_accuracy(per_class_accuracy(pred, target, num_classes), groups)
    result["overall"] = 100.0 * float((pred == target).double().mean())
    return result
