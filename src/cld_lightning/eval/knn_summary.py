"""The kNN summary: :func:`knn_report`, the one dict of weighted-kNN metrics (online validation,
``cld-eval``, ``cld-train``'s final metrics and the pixel / untrained baselines all call it), and
:func:`knn_summary_lines`, its lines in ``cld-train``'s printed summary.

Steps: drop unlabelled memory images (label < 0: they cannot vote) -> one neighbour search ->
weighted-kNN predictions under the NPID protocol and the class-balanced protocol (votes divided by
the class's memory count, :func:`cld_lightning.eval.knn.class_balance_weights`) -> top-1 and mean
per-class top-1 of each -> on a long-tailed memory (:func:`~cld_lightning.longtail.
is_long_tailed`), many/medium/few-shot accuracy of each (groups: :mod:`cld_lightning.longtail`).

Keys (``prefix`` is ``"knn/"`` for the learned embedding, ``"knn/pixel_"``,
``"knn/random_init_"``... for the baselines), all percentages:

* ``{prefix}top1``, ``{prefix}balanced_top1``: top-1 over the test samples;
* ``{prefix}mean_class_top1``, ``{prefix}balanced_mean_class_top1``: mean over the classes with
  test samples of the per-class top-1 (equals top-1 on a balanced test set);
* long-tailed memory only: ``{prefix}many``, ``{prefix}medium``, ``{prefix}few`` and
  ``{prefix}balanced_many``... (a group with no class is left out), and, describing the memory
  (the same for every prefix), ``knn/shot_rule_paper`` (1: the paper's thresholds >100/20-100/<20
  images, 0: thirds of the classes by count) and ``knn/shot_classes_many|medium|few`` (classes per
  group).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from cld_lightning.eval._checks import (
    as_feature_matrix,
    as_label_vector,
    as_test_set,
    check_same_length,
)
from cld_lightning.eval.knn import KnnOptions, knn_predictions
from cld_lightning.longtail import (
    GROUPS,
    group_accuracy,
    is_long_tailed,
    per_class_accuracy,
    shot_groups,
)

PROTOCOLS = (("", False), ("balanced_", True))  # (key infix, class-balanced votes)


def knn_report(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    *,
    prefix: str = "knn/",
    long_tail: bool | None = None,
    **settings: Any,
) -> dict[str, float]:
    """Weighted-kNN metrics (NPID and class-balanced protocols, shot groups): module docstring.

    Args:
        train_features, train_labels: the memory set, ``[N, D]`` and ``[N]``; rows labelled
            ``< 0`` (unlabelled) are dropped.
        test_features, test_labels: ``[M, D]``, ``[M]`` (``M >= 1``, labels in ``[0, C)``).
        num_classes, k, temperature: as :func:`~cld_lightning.eval.weighted_knn`.
        prefix: key prefix of the accuracies.
        long_tail: report the shot-group accuracies: ``None`` (default) when the labelled memory
            is long-tailed (:func:`~cld_lightning.longtail.is_long_tailed`), or forced.
        settings: ``chunk_size``, ``backend``, ``normalize`` (:class:`~cld_lightning.eval.
            KnnOptions`).
    """
    options = KnnOptions.of(k, temperature, **settings)
    train_labels = as_label_vector(train_labels, "train_labels")
    train_features = as_feature_matrix(train_features, "train_features")
    check_same_length(train_features, train_labels, "train_features", "train_labels")
    test_features, test_labels = as_test_set(test_features, test_labels, num_classes)
    labelled = train_labels >= 0  # unlabelled images (e.g. STL-10 unlabeled) cannot vote
    if not bool(labelled.all()):
        train_features, train_labels = train_features[labelled], train_labels[labelled]
    preds = knn_predictions(
        train_features,
        train_labels,
        test_features,
        num_classes,
        options,
        balanced=[b for _, b in PROTOCOLS],
    )
    counts = torch.bincount(train_labels.cpu(), minlength=num_classes)
    report_shots = is_long_tailed(counts) if long_tail is None else bool(long_tail)
    groups = shot_groups(counts) if report_shots else None
    target = test_labels.cpu()
    out: dict[str, float] = {}
    for (infix, _), pred in zip(PROTOCOLS, preds, strict=True):
        pred = pred.cpu()
        out[f"{prefix}{infix}top1"] = float((pred == target).float().mean() * 100.0)
        per_class = per_class_accuracy(pred, target, num_classes)
        out[f"{prefix}{infix}mean_class_top1"] = float(per_class.nanmean())
        if groups is not None:
            for name, acc in group_accuracy(per_class, groups).items():
                if not math.isnan(acc):
                    out[f"{prefix}{infix}{name}"] = acc
    if groups is not None:
        out["knn/shot_rule_paper"] = float(groups.rule == "paper")
        out.update({f"knn/shot_classes_{name}": float(len(groups[name])) for name in GROUPS})
    return out


def shot_rule_description(metrics: dict[str, float]) -> str | None:
    """One line naming the shot-group rule and group sizes of a :func:`knn_report` (or ``None``
    when it has no shot groups)."""
    if "knn/shot_rule_paper" not in metrics:
        return None
    rule = (
        "paper thresholds >100 / 20-100 / <20 images"
        if metrics["knn/shot_rule_paper"]
        else "thirds of the classes sorted by count"
    )
    sizes = ", ".join(f"{g} {int(metrics.get(f'knn/shot_classes_{g}', 0))}" for g in GROUPS)
    return f"{rule}; classes: {sizes}"


def _pct(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.2f}" if key in metrics else "-"


def knn_summary_lines(metrics: dict[str, float]) -> list[str]:
    """The class-balanced and shot-group lines of ``cld-train``'s printed summary (after the
    NPID-protocol ``knn/top1`` and baseline lines); empty when ``metrics`` has none."""
    lines: list[str] = []
    if "knn/balanced_top1" in metrics:
        lines.append(
            f"  {'class-balanced kNN top-1 (test):':<37}{metrics['knn/balanced_top1']:.2f} %"
        )
    if "knn/mean_class_top1" in metrics:
        lines.append(
            f"  {'mean per-class top-1, NPID / bal.:':<37}{_pct(metrics, 'knn/mean_class_top1')}"
            f" / {_pct(metrics, 'knn/balanced_mean_class_top1')} %"
        )
    baselines = [
        (p, label)
        for p, label in (("pixel", "raw pixels"), ("random_init", "untrained network"))
        if f"knn/{p}_balanced_top1" in metrics
    ]
    for p, label in baselines:
        lines.append(
            f"  {'class-balanced, ' + label + ':':<37}{metrics[f'knn/{p}_balanced_top1']:.2f} %"
        )
    rule = shot_rule_description(metrics)
    if rule is None:
        return lines
    lines.append(f"  shot groups: {rule}")
    rows = [("", "many / medium / few, NPID:"), ("balanced_", "same, class-balanced:")]
    rows += [(f"{p}_balanced_", f"same, balanced, {label}:") for p, label in baselines]
    for infix, label in rows:
        keys = [f"knn/{infix}{g}" for g in GROUPS]
        if any(k in metrics for k in keys):
            lines.append(f"  {label:<37}{' / '.join(_pct(metrics, k) for k in keys)} %")
    return lines
