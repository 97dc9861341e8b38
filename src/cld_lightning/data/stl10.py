"""STL-10 from its binary files, memory-mapped (the 100k unlabeled images are 2.7 GB).

Pretraining set: labelled ``train`` (5000) followed by ``unlabeled`` (100000, label -1) when
``use_unlabeled``; the kNN memory is the labelled part; test is the 8000-image test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataLayoutError, DatasetNotFoundError
from .sources import ConcatImages, MemmapImages
from .spec import DataOptions, SplitData
from .transforms import IMAGENET_MEAN, IMAGENET_STD

STL_DIR = "stl10_binary"
SHAPE = (3, 96, 96)
# the order of the archive's class_names.txt (labels 1..10 stored, 0..9 used)
CLASS_NAMES = "airplane bird car cat deer dog horse monkey ship truck".split()
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"


def _how_to(root: Path) -> str:
    return (
        f"set data.download=true on a machine with internet access (torchvision fetches {URL}, "
        f"2.6 GB), or extract that archive into {root} so that {root / STL_DIR / 'train_X.bin'} "
        "exists"
    )


def _needed(use_unlabeled: bool) -> list[str]:
    files = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    return files + (["unlabeled_X.bin"] if use_unlabeled else [])


def stl10_present(root: str | Path, use_unlabeled: bool = True) -> bool:
    d = Path(root) / STL_DIR
    return all((d / f).is_file() for f in _needed(use_unlabeled))


def download_stl10(root: str | Path, use_unlabeled: bool = True) -> None:
    root = Path(root)
    if stl10_present(root, use_unlabeled):
        return
    from torchvision import datasets

    try:
        root.mkdir(parents=True, exist_ok=True)
        datasets.STL10(str(root), split="train", download=True)
    except Exception as e:  # noqa: BLE001
        raise DatasetNotFoundError(
            "stl10", [root / STL_DIR], _how_to(root) + f". Download failed: {e!r}"
        ) from e


def _labels(path: Path) -> np.ndarray:
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataLayoutError(f"{path}: STL-10 labels must be 1..10")
    return y


def _split(d: Path, split: str) -> MemmapImages:
    y = _labels(d / f"{split}_y.bin")
    try:
        return MemmapImages(d / f"{split}_X.bin", y, SHAPE)
    except ValueError as e:
        raise DataLayoutError(f"{d / f'{split}_X.bin'}: {e} (expected 3x96x96 records)") from e


def stl10_class_names(d: Path) -> list[str]:
    """The archive's ``class_names.txt`` (one name a line), else the known STL-10 names."""
    path = d / "class_names.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) == len(CLASS_NAMES):
            return names
    return list(CLASS_NAMES)


def load_stl10(opts: DataOptions) -> SplitData:
    root = Path(opts.root)
    d = root / STL_DIR
    if opts.download and not stl10_present(root, opts.use_unlabeled):
        download_stl10(root, opts.use_unlabeled)
    missing = [d / f for f in _needed(opts.use_unlabeled) if not (d / f).is_file()]
    if missing:
        raise DatasetNotFoundError("stl10", missing, _how_to(root))
    train = _split(d, "train")
    if opts.use_unlabeled:
        path = d / "unlabeled_X.bin"
        n = path.stat().st_size // int(np.prod(SHAPE))
        unl = MemmapImages(path, np.full(n, -1), SHAPE)
        train = ConcatImages([train, unl])
    return SplitData(
        train=train,
        test=_split(d, "test"),
        num_classes=10,
        in_channels=3,
        native_size=96,
        default_image_size=96,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=stl10_class_names(d),
    )
