"""CIFAR-10/100 read straight from the python pickle batches (no MD5 check, no PIL).

``torchvision`` is only used to download and extract the archive when the batches are missing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .errors import DataLayoutError, DatasetNotFoundError
from .sources import TensorImages
from .spec import DataOptions, SplitData
from .transforms import CIFAR_MEAN, CIFAR_STD

CIFAR = {
    "cifar10": {
        "dir": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
        "classes": 10,
        "meta": ("batches.meta", "label_names"),
        "names": "airplane automobile bird cat deer dog frog horse ship truck".split(),
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    },
    "cifar100": {
        "dir": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
        "classes": 100,
        "meta": ("meta", "fine_label_names"),
        "names": [],  # read from the archive's meta file
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    },
}


def _info(name: str) -> dict:
    if name not in CIFAR:
        raise ValueError(f"unknown CIFAR variant {name!r}; valid: {', '.join(CIFAR)}")
    return CIFAR[name]


def cifar_dir(root: str | Path, name: str) -> Path:
    return Path(root) / _info(name)["dir"]


def cifar_present(root: str | Path, name: str) -> bool:
    info, d = _info(name), cifar_dir(root, name)
    return all((d / f).is_file() for f in info["train"] + info["test"])


def _how_to(root: Path, name: str) -> str:
    info = _info(name)
    return (
        f"set data.download=true on a machine with internet access (torchvision fetches "
        f"{info['url']}), or extract that archive into {root} so that "
        f"{root / info['dir'] / info['train'][0]} exists; point data.root (or the CLD_DATA_DIR "
        f"environment variable) at the folder that holds {info['dir']}/"
    )


def download_cifar(root: str | Path, name: str) -> None:
    """Download + extract with torchvision unless the batches are already there."""
    root = Path(root)
    if cifar_present(root, name):
        return
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - no network, proxy, disk: report uniformly
        raise DatasetNotFoundError(
            name, [cifar_dir(root, name)], _how_to(root, name) + f". Download failed: {e!r}"
        ) from e


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, AttributeError) as e:
        raise DataLayoutError(
            f"{path}: not a CIFAR python batch (expected a pickled dict with 'data' "
            f"[N, 3072] uint8 and '{label_key}'): {e!r}"
        ) from e
    if len(data) != len(labels):
        raise DataLayoutError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def read_cifar(root: str | Path, name: str, train: bool) -> TensorImages:
    """One split as an in-memory ``uint8 [N, 3, 32, 32]`` source."""
    info, d = _info(name), cifar_dir(root, name)
    files = info["train" if train else "test"]
    missing = [d / f for f in files if not (d / f).is_file()]
    if missing:
        raise DatasetNotFoundError(name, missing, _how_to(Path(root), name))
    parts = [_read_batch(d / f, info["label_key"]) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(labels) and (labels.min() < 0 or labels.max() >= info["classes"]):
        raise DataLayoutError(f"{d}: labels outside [0, {info['classes']})")
    return TensorImages(data, labels)


def cifar_class_names(root: str | Path, name: str) -> list[str]:
    """Class names from the archive's meta file (``batches.meta`` / ``meta``), else the known
    CIFAR-10 names (CIFAR-100 without its meta file: none, labels are shown as numbers)."""
    info = _info(name)
    meta_file, key = info["meta"]
    path = cifar_dir(root, name) / meta_file
    if path.is_file():
        try:
            with open(path, "rb") as f:
                meta = pickle.load(f, encoding="latin1")
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
            if len(names) == info["classes"]:
                return names
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError):
            pass  # names are cosmetic (plot legends): fall back
    return list(info["names"])


def load_cifar(name: str, opts: DataOptions) -> SplitData:
    if opts.download and not cifar_present(opts.root, name):
        download_cifar(opts.root, name)
    return SplitData(
        train=read_cifar(opts.root, name, train=True),
        test=read_cifar(opts.root, name, train=False),
        num_classes=_info(name)["classes"],
        in_channels=3,
        native_size=32,
        default_image_size=32,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        class_names=cifar_class_names(opts.root, name),
    )
