"""Many/medium/few-shot class groups of a long-tailed training set: the one home of the split.

Both the data layer (``SSLDataModule.shot_groups``, its log line) and the evaluation
(:func:`cld_lightning.eval.knn_report`, :func:`cld_lightning.eval.shot_accuracy`) use
:func:`shot_groups` (public path: ``cld_lightning.longtail.shot_groups``); the package imports
only torch and numpy, so neither layer imports the other.

Rule (``rule="auto"``, the default), on the per-class counts of the *training* (kNN memory) set:

1. **paper**: the OLTR / Decoupling thresholds of CLD.md §3: many-shot ``n_c > 100``, medium-shot
   ``20 <= n_c <= 100``, few-shot ``n_c < 20`` images. Kept when they give every group at least 2
   classes, or when the set is at the scale of the long-tail benchmarks (largest class
   ``>= PAPER_SCALE_MIN_HEAD = 500`` images, CIFAR-100-LT's) and they fill at least two groups with
   at least 2 classes each. The second case keeps the published split of CIFAR-10-LT
   (5000 ... 50) and Fashion-MNIST-LT (6000 ... 60) at ρ = 100: no class has fewer than 20
   images, so many = 8 classes, medium = 2, few = none, as in the literature.
2. **thirds** otherwise (a small or scaled-down set, where absolute thresholds leave a group empty
   or with one class, e.g. a 1,000-image 10-class set 250 ... 22 has no few-shot class): classes
   sorted by count, many = the ``max(1, C // 3)`` largest, few = the ``max(1, C // 3)`` smallest,
   medium = the rest; classes with equal counts stay in one group (a tie at the many boundary joins
   many, one at the few boundary joins few). With ``C >= 6`` every group has at least 2 classes
   (up to ties).

The result records which rule was used (:attr:`ShotGroups.rule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

MANY_SHOT_MIN = 100  # paper rule, many-shot: strictly more training images than this
FEW_SHOT_MAX = 20  # paper rule, few-shot: strictly fewer training images than this
#: the paper rule is kept with an empty group only from this largest-class size on (CIFAR-100-LT)
PAPER_SCALE_MIN_HEAD = 500
GROUPS = ("many", "medium", "few")

ShotRule = Literal["auto", "paper", "thirds"]


class ShotGroups(dict[str, list[int]]):
    """``{"many": [...], "medium": [...], "few": [...]}`` class indices (sorted), plus
    :attr:`rule` (``"paper"`` or ``"thirds"``); compares equal to the plain dict."""

    def __init__(self, groups: dict[str, list[int]], rule: str, num_classes: int) -> None:
        super().__init__(groups)
        self.rule = rule
        self.num_classes = num_classes

    def masks(self) -> dict[str, Tensor]:
        """Boolean ``[num_classes]`` masks, one per group."""
        out = {}
        for name in GROUPS:
            mask = torch.zeros(self.num_classes, dtype=torch.bool)
            mask[self[name]] = True
            out[name] = mask
        return out

    def sizes(self) -> dict[str, int]:
        """Classes per group."""
        return {name: len(self[name]) for name in GROUPS}


def _as_counts(class_counts: Tensor | Sequence[int] | np.ndarray) -> Tensor:
    if isinstance(class_counts, Tensor):
        counts = class_counts.detach().cpu()
    else:
        counts = torch.as_tensor(np.asarray(class_counts))
    if counts.dim() == 1 and counts.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if counts.dim() != 1 or counts.is_floating_point() or counts.dtype == torch.bool:
        raise ValueError(
            f"train_class_counts must be a 1-D sequence of integer counts, got {tuple(counts.shape)} "
            f"{counts.dtype}"
        )
    if counts.numel() and int(counts.min()) < 0:
        raise ValueError("train_class_counts must be >= 0")
    return counts.long()


def _paper_masks(counts: Tensor, many: int, few: int) -> dict[str, Tensor]:
    many_mask, few_mask = counts > many, counts < few
    return {"many": many_mask, "medium": ~many_mask & ~few_mask, "few": few_mask}


def _thirds_masks(counts: Tensor) -> dict[str, Tensor]:
    c = counts.numel()
    if c == 0:
        empty = torch.zeros(0, dtype=torch.bool)
        return {name: empty for name in GROUPS}
    edge = max(1, c // 3) if c >= 2 else 1
    desc = counts.sort(descending=True).values
    many = counts >= desc[edge - 1]
    few = (counts <= desc.flip(0)[edge - 1]) & ~many if c >= 2 else torch.zeros_like(many)
    return {"many": many, "medium": ~many & ~few, "few": few}


def paper_rule_applies(
    class_counts: Tensor | Sequence[int] | np.ndarray,
    many_threshold: int = MANY_SHOT_MIN,
    few_threshold: int = FEW_SHOT_MAX,
) -> bool:
    """Whether ``rule="auto"`` keeps the fixed thresholds for these counts (module docstring)."""
    counts = _as_counts(class_counts)
    if counts.numel() == 0:
        return True
    sizes = [int(m.sum()) for m in _paper_masks(counts, many_threshold, few_threshold).values()]
    if all(s >= 2 for s in sizes):
        return True
    filled = [s for s in sizes if s > 0]
    at_scale = int(counts.max()) >= PAPER_SCALE_MIN_HEAD
    return at_scale and len(filled) >= 2 and all(s >= 2 for s in filled)


def shot_groups(
    class_counts: Tensor | Sequence[int] | np.ndarray,
    rule: ShotRule = "auto",
    many_threshold: int = MANY_SHOT_MIN,
    few_threshold: int = FEW_SHOT_MAX,
) -> ShotGroups:
    """Many/medium/few-shot class lists from per-class training counts (rule: module docstring).

    Args:
        class_counts: ``[C]`` training (kNN memory) images per class.
        rule: ``"auto"`` (paper thresholds where meaningful, else thirds), ``"paper"`` (always the
            thresholds) or ``"thirds"`` (always by rank).
        many_threshold, few_threshold: the paper rule's thresholds (many ``> many_threshold``,
            few ``< few_threshold``).
    """
    counts = _as_counts(class_counts)
    if rule not in ("auto", "paper", "thirds"):
        raise ValueError(f"rule must be 'auto', 'paper' or 'thirds', got {rule!r}")
    if rule == "auto":
        rule = "paper" if paper_rule_applies(counts, many_threshold, few_threshold) else "thirds"
    if rule == "paper":
        masks = _paper_masks(counts, many_threshold, few_threshold)
    else:
        masks = _thirds_masks(counts)
    lists = {name: torch.nonzero(masks[name]).flatten().tolist() for name in GROUPS}
    return ShotGroups(lists, rule, counts.numel())
