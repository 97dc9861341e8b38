"""Evaluation library of cld-lightning: pure functions, no Hydra.

Heavy optional dependencies (faiss, scikit-learn, matplotlib, umap) are imported inside the
functions that need them, so importing this package is cheap.
"""

from cld_lightning.eval.features import extract_features, extract_view_pairs
from cld_lightning.eval.knn import KnnOptions, knn_accuracy, weighted_knn
from cld_lightning.eval.knn_summary import knn_report
from cld_lightning.eval.lidar import lidar
from cld_lightning.eval.linear_probe import (
    FAST_RECIPE,
    REFERENCE_RECIPE,
    LinearProbeConfig,
    linear_probe,
)
from cld_lightning.eval.lt_protocol import long_tail_protocol
from cld_lightning.eval.plots import plot_cluster_sizes, plot_embedding
from cld_lightning.eval.selection import label_free_metrics
from cld_lightning.eval.semi_supervised import balanced_label_subset, fine_tune
from cld_lightning.longtail.accuracy import shot_accuracy

__all__ = [
    "FAST_RECIPE",
    "KnnOptions",
    "REFERENCE_RECIPE",
    "LinearProbeConfig",
    "balanced_label_subset",
    "extract_features",
    "extract_view_pairs",
    "fine_tune",
    "knn_accuracy",
    "knn_report",
    "label_free_metrics",
    "lidar",
    "linear_probe",
    "long_tail_protocol",
    "plot_cluster_sizes",
    "plot_embedding",
    "shot_accuracy",
    "weighted_knn",
]


def __getattr__(name: str) -> object:  # the old re-export of shot_groups, for one release
    from cld_lightning.longtail import old_path

    return old_path(__name__, name)
