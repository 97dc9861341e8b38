"""The CLD plug-in core: local grouping (batch k-means), the cross-level loss, heads, mixin.

Importing this package (or any of its modules but ``callback``) does not import Lightning:
:class:`CLDCallback` is loaded on first access.
"""

from typing import Any

from cld_lightning.cld.config import CLDConfig
from cld_lightning.cld.heads import NormLinear, build_head
from cld_lightning.cld.kmeans import batch_kmeans
from cld_lightning.cld.loss import CrossLevelOutput, cross_level_loss, cross_level_loss_with_stats
from cld_lightning.cld.mixin import CLDMixin

__all__ = [
    "CLDCallback",
    "CLDConfig",
    "CLDMixin",
    "CrossLevelOutput",
    "NormLinear",
    "batch_kmeans",
    "build_head",
    "cross_level_loss",
    "cross_level_loss_with_stats",
]


def __getattr__(name: str) -> Any:
    if name == "CLDCallback":  # the only piece that needs pytorch_lightning
        from cld_lightning.cld.callback import CLDCallback

        return CLDCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
