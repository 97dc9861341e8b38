"""Long-tail logic in one home, plain torch (no Lightning, no Hydra, no other project package):

* :mod:`~cld_lightning.longtail.counts`: the exponential class profile of a long-tailed subset
  (``data.imbalance_ratio``), its indices, class counts and :func:`is_long_tailed`;
* :mod:`~cld_lightning.longtail.shots`: the one many/medium/few-shot split, :func:`shot_groups`;
* :mod:`~cld_lightning.longtail.accuracy`: per-class, per-group and :func:`shot_accuracy`.

The data layer and the evaluation both import from here (neither imports the other).
"""

from cld_lightning.longtail.accuracy import group_accuracy, per_class_accuracy, shot_accuracy
from cld_lightning.longtail.counts import (
    LONG_TAIL_MIN_RATIO,
    check_imbalance_ratio,
    class_counts,
    is_long_tailed,
    long_tail_counts,
    long_tail_indices,
)
from cld_lightning.longtail.shots import (
    FEW_SHOT_MAX,
    GROUPS,
    MANY_SHOT_MIN,
    PAPER_SCALE_MIN_HEAD,
    ShotGroups,
    ShotRule,
    paper_rule_applies,
    shot_groups,
)

__all__ = [
    "FEW_SHOT_MAX",
    "GROUPS",
    "LONG_TAIL_MIN_RATIO",
    "MANY_SHOT_MIN",
    "PAPER_SCALE_MIN_HEAD",
    "ShotGroups",
    "ShotRule",
    "check_imbalance_ratio",
    "class_counts",
    "group_accuracy",
    "is_long_tailed",
    "long_tail_counts",
    "long_tail_indices",
    "paper_rule_applies",
    "per_class_accuracy",
    "shot_accuracy",
    "shot_groups",
]


def old_path(package: str, name: str) -> object:
    """``shot_groups`` through the old re-export path ``package.shot_groups`` (``cld_lightning.eval``,
    ``cld_lightning.data``): warns, for one release; ``AttributeError`` for any other name."""
    if name != "shot_groups":
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"{package}.shot_groups moved to cld_lightning.longtail.shot_groups; the old path is "
        "removed in 0.3",
        DeprecationWarning,
        stacklevel=3,
    )
    return shot_groups
