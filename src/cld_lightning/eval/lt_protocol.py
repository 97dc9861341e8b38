"""The long-tailed SSL protocol of SDCLR (Jiang et al., NeurIPS 2021) and BCL (Zhou et al.,
ICML 2022): pretrain on a long-tailed set, then judge the frozen features by linear probes trained
on the *balanced* training set and tested on the balanced test set.

:func:`long_tail_protocol` returns, under ``lt_protocol/``:

- ``full_top1``: the probe on every image of the balanced training set; with the pretraining
  set's class counts given, also ``full_many`` / ``full_medium`` / ``full_few`` (classes grouped
  by their pretraining frequency, as those papers report; an empty group is left out);
- ``{s}shot_top1`` for each ``s`` in ``shots`` (100, 50, 10): the mean over ``num_splits``
  fixed splits of the probe trained on ``s`` images per class (a class with fewer keeps all),
  with ``{s}shot_top1_std`` (sample std over the splits; 0 for one split), each split's
  ``{s}shot_top1_split{j}`` and ``{s}shot_images`` (training images of split 0);
- ``train_images``, ``num_splits``.

Split ``j`` draws one seeded permutation per class (seed ``seed + j``) and keeps its first ``s``
images, so within a split the 10-shot set lies inside the 50-shot set, inside the 100-shot set.
The probe is :func:`~cld_lightning.eval.linear_probe.linear_probe_result` with the given recipe
(``cld-eval``: ``linear.recipe``), on fixed features: no augmentation during the probe's training,
unlike the papers' SGD probes, so absolute figures differ from theirs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from cld_lightning.eval._checks import as_label_vector, check_positive_int
from cld_lightning.eval.linear_probe import FAST_RECIPE, LinearProbeConfig, linear_probe_result

PREFIX = "lt_protocol/"


def few_shot_indices(targets: Tensor, shots: int, seed: int = 0) -> Tensor:
    """Sorted indices of ``shots`` images per class of ``targets`` (all of a smaller class),
    drawn with one seeded permutation per class; negative labels are never chosen."""
    targets = as_label_vector(targets, "targets").cpu()
    shots = check_positive_int(shots, "shots")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(targets[targets >= 0]).tolist():
        members = (targets == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:shots]])
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(chosen).sort().values


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def long_tail_protocol(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    shots: Sequence[int] = (100, 50, 10),
    num_splits: int = 3,
    config: LinearProbeConfig = FAST_RECIPE,
    seed: int = 0,
    pretrain_counts: Tensor | Sequence[int] | None = None,
) -> dict[str, float]:
    """Full and few-shot linear probes on a balanced training set (module docstring).

    Args:
        train_features, train_labels: the balanced training set's frozen features ``[N, D]`` and
            labels ``[N]`` (negative = unlabelled, left out).
        test_features, test_labels: the balanced test set.
        num_classes: number of classes.
        shots: images per class of each few-shot probe.
        num_splits: fixed seeded splits per shot count.
        config: the probe's recipe.
        seed: seed of split 0 (split ``j`` uses ``seed + j``).
        pretrain_counts: ``[C]`` images per class of the (long-tailed) pretraining set: the full
            probe's many/medium/few figures (classes grouped by these counts); None = none.
    """
    num_splits = check_positive_int(num_splits, "num_splits")
    shots = [check_positive_int(s, "shots") for s in shots]
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    full = linear_probe_result(
        train_features, train_labels, test_features, test_labels, num_classes, config
    )
    out = {
        f"{PREFIX}full_top1": full.top1,
        f"{PREFIX}train_images": float(train_labels.numel()),
        f"{PREFIX}num_splits": float(num_splits),
    }
    if pretrain_counts is not None:
        # lazy: the eval package imports this module's peers
        from cld_lightning.eval import shot_accuracy

        groups = shot_accuracy(full.pred, test_labels, torch.as_tensor(pretrain_counts))
        out.update(  # a group with no class (NaN) is left out, as in the kNN report
            {
                f"{PREFIX}full_{g}": groups[g]
                for g in ("many", "medium", "few")
                if not math.isnan(groups[g])
            }
        )
    for s in shots:
        values = []
        for j in range(num_splits):
            idx = few_shot_indices(train_labels, s, seed + j)
            res = linear_probe_result(
                train_features[idx],
                train_labels[idx],
                test_features,
                test_labels,
                num_classes,
                config,
            )
            values.append(res.top1)
            out[f"{PREFIX}{s}shot_top1_split{j}"] = res.top1
            if j == 0:
                out[f"{PREFIX}{s}shot_images"] = float(idx.numel())
        mean, std = _mean_std(values)
        out[f"{PREFIX}{s}shot_top1"] = mean
        out[f"{PREFIX}{s}shot_top1_std"] = std
    return out
