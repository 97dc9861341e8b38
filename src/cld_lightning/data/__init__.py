"""Data layer: datamodule, data-set loaders, multi-view transforms, long-tail and correlated sets."""

from cld_lightning.longtail import class_counts, long_tail_counts, long_tail_indices

from .correlated import CorrelatedImages
from .datamodule import SSLDataModule, available_datasets
from .datasets import EvalDataset, MultiViewDataset
from .errors import CorruptImageError, DataLayoutError, DatasetNotFoundError
from .registry import DATASETS, get_dataset, register_dataset
from .sources import (
    ConcatImages,
    FileImages,
    ImageSource,
    MemmapImages,
    SubsetImages,
    TensorImages,
)
from .spec import DataOptions, DatasetSpec, SplitData
from .transforms import (
    AUGMENTATIONS,
    GaussianBlur,
    MultiViewTransform,
    build_eval_transform,
    build_multiview_transform,
    gaussian_kernel_size,
    jigsaw_view_transform,
)

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "ConcatImages",
    "CorrelatedImages",
    "CorruptImageError",
    "DataLayoutError",
    "DataOptions",
    "DatasetNotFoundError",
    "DatasetSpec",
    "EvalDataset",
    "GaussianBlur",
    "FileImages",
    "ImageSource",
    "MemmapImages",
    "MultiViewDataset",
    "MultiViewTransform",
    "SSLDataModule",
    "SplitData",
    "SubsetImages",
    "TensorImages",
    "available_datasets",
    "build_eval_transform",
    "build_multiview_transform",
    "class_counts",
    "gaussian_kernel_size",
    "jigsaw_view_transform",
    "get_dataset",
    "long_tail_counts",
    "long_tail_indices",
    "register_dataset",
]


def __getattr__(name: str) -> object:  # the old re-export of shot_groups, for one release
    from cld_lightning.longtail import old_path

    return old_path(__name__, name)
