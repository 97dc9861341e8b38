"""Fashion-MNIST from IDX files (plain or gzipped), found without a download where possible.

Lookup order (the first folder holding all four files wins):

1. ``ROOT/FashionMNIST/raw`` (torchvision's layout, un-gzipped or ``.gz``);
2. ``ROOT`` itself (the four files, plain or ``.gz``);
3. ``FASHION_MNIST_SYSTEM_DIR`` (Debian's ``dataset-fashion-mnist`` package, gzipped);
4. torchvision's download into ``ROOT/FashionMNIST/raw`` (when ``download`` is true).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .errors import DataLayoutError, DatasetNotFoundError
from .sources import TensorImages
from .spec import DataOptions, SplitData
from .transforms import FASHION_MNIST_MEAN, FASHION_MNIST_STD

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def candidate_dirs(root: str | Path) -> list[Path]:
    """Folders searched, in order (reads the module constant at call time)."""
    root = Path(root)
    return [root / "FashionMNIST" / "raw", root, Path(FASHION_MNIST_SYSTEM_DIR)]


def _find(d: Path, stem: str) -> Path | None:
    for p in (d / stem, d / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def find_fashion_mnist(root: str | Path) -> dict[str, Path] | None:
    """Paths of the four IDX files in the first folder that has all of them, else None."""
    for d in candidate_dirs(root):
        found = {k: _find(d, stem) for k, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain): uint8 images ``[N, H, W]`` or labels ``[N]``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        magic = struct.unpack(">I", raw[:4])[0]
        if magic == 2051:
            n, h, w = struct.unpack(">III", raw[4:16])
            arr = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)
        elif magic == 2049:
            (n,) = struct.unpack(">I", raw[4:8])
            arr = np.frombuffer(raw, dtype=np.uint8, offset=8).reshape(n)
        else:
            raise ValueError(f"magic number {magic}, expected 2051 (images) or 2049 (labels)")
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise DataLayoutError(f"{path}: not a valid IDX file: {e}") from e
    return arr.copy()


def download_fashion_mnist(root: str | Path) -> None:
    """torchvision download into ``ROOT/FashionMNIST/raw`` unless the files are found already."""
    if find_fashion_mnist(root) is not None:
        return
    from torchvision import datasets

    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            datasets.FashionMNIST(str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001
        raise DatasetNotFoundError(
            "fashion_mnist", candidate_dirs(root), _how_to(root) + f". Download failed: {e!r}"
        ) from e


def _how_to(root: str | Path) -> str:
    return (
        "install Debian's package (`apt-get install dataset-fashion-mnist`, files in "
        f"{FASHION_MNIST_SYSTEM_DIR}), or put train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] "
        f"into {Path(root)} or {Path(root) / 'FashionMNIST' / 'raw'}, or set data.download=true "
        "on a machine with internet access"
    )


def _split(files: dict[str, Path], split: str) -> TensorImages:
    x = read_idx(files[f"{split}_images"])
    y = read_idx(files[f"{split}_labels"]).astype(np.int64)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataLayoutError(
            f"{files[f'{split}_images']}: {x.shape} images do not match {y.shape} labels"
        )
    return TensorImages(x[:, None], y)


def load_fashion_mnist(opts: DataOptions) -> SplitData:
    files = find_fashion_mnist(opts.root)
    if files is None and opts.download:
        download_fashion_mnist(opts.root)
        files = find_fashion_mnist(opts.root)
    if files is None:
        raise DatasetNotFoundError("fashion_mnist", candidate_dirs(opts.root), _how_to(opts.root))
    return SplitData(
        train=_split(files, "train"),
        test=_split(files, "test"),
        num_classes=10,
        in_channels=1,
        native_size=28,
        default_image_size=28,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        class_names=[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],  # fmt: skip
    )
