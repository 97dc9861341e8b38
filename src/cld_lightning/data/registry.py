"""Registry of data sets by name; ``register_dataset`` adds user data sets."""

from __future__ import annotations

from collections.abc import Callable

from .cifar import download_cifar, load_cifar
from .fashion_mnist import download_fashion_mnist, load_fashion_mnist
from .filelist import load_filelist
from .imagefolder import load_imagefolder
from .spec import DataOptions, DatasetSpec, SplitData
from .stl10 import download_stl10, load_stl10

DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    load: Callable[[DataOptions], SplitData],
    download: Callable[[DataOptions], None] | None = None,
    **meta,
) -> DatasetSpec:
    """Register (or replace) a data set; ``meta``: num_classes, in_channels, image_size, defaults."""
    spec = DatasetSpec(name=name, load=load, download=download, **meta)
    DATASETS[name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data.dataset={name!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


for _c, _k in (("cifar10", 10), ("cifar100", 100)):
    register_dataset(
        _c,
        lambda o, _c=_c: load_cifar(_c, o),
        lambda o, _c=_c: download_cifar(o.root, _c),
        num_classes=_k,
        in_channels=3,
        image_size=32,
    )
register_dataset(
    "fashion_mnist",
    load_fashion_mnist,
    lambda o: download_fashion_mnist(o.root),
    num_classes=10,
    in_channels=1,
    image_size=28,
)
register_dataset(
    "stl10",
    load_stl10,
    lambda o: download_stl10(o.root, o.use_unlabeled),
    num_classes=10,
    in_channels=3,
    image_size=96,
)
register_dataset(
    "imagefolder",
    load_imagefolder,
    defaults={"train_dir": "train", "test_dir": None, "cache_images": False, "image_size": 224},
)


def _load_imagenet100(opts: DataOptions) -> SplitData:
    if opts.class_list is None:
        raise ValueError(
            "dataset=imagenet100 needs data.class_list: a text file with the 100 ImageNet class "
            "folder names (wnids), one per line; data.root is the full ImageNet ImageFolder"
        )
    return load_imagefolder(opts, "imagenet100")


register_dataset(
    "imagenet100",
    _load_imagenet100,
    in_channels=3,
    image_size=224,
    defaults={"train_dir": "train", "test_dir": None, "cache_images": False, "image_size": 224},
)
register_dataset(
    "kitchen_hc",
    lambda o: load_imagefolder(o, "kitchen_hc"),
    image_size=32,
    defaults={"train_dir": "train", "test_dir": "test", "cache_images": True, "image_size": 32},
)
register_dataset("filelist", load_filelist, defaults={"cache_images": False, "image_size": 224})
