"""Plain records shared by the data-set loaders and the datamodule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .sources import ImageSource


@dataclass
class DataOptions:
    """What a loader may need from the datamodule's arguments (already validated)."""

    root: Path
    download: bool = True
    image_size: int | None = None
    in_channels: int | None = None
    class_list: Path | None = None
    train_dir: str | None = None
    test_dir: str | None = None
    train_list: Path | None = None
    test_list: Path | None = None
    use_unlabeled: bool = True
    cache_images: bool | None = None
    skip_corrupt: bool = False


@dataclass
class SplitData:
    """A loaded data set: pretraining split (labels -1 where unknown) and balanced test split.

    ``native_size`` is the side of every stored image when all share one (CIFAR: 32), else None.
    """

    train: ImageSource
    test: ImageSource
    num_classes: int
    in_channels: int
    native_size: int | None
    default_image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    class_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: how to load it, optionally how to download it, static metadata."""

    name: str
    load: Callable[[DataOptions], SplitData]
    download: Callable[[DataOptions], None] | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    image_size: int | None = None
    defaults: dict = field(default_factory=dict)
