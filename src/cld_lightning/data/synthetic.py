"""Write tiny fake data sets to disk in the real on-disk formats (for tests and quick demos).

Images carry class signal: each class has its own mean colour (grey level for 1 channel), each image
adds a smooth random pattern (4x4 noise upsampled) and a little pixel noise. Nearest neighbours in
pixel space therefore mostly share the label, so kNN on these images is meaningful.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def class_colours(num_classes: int, channels: int = 3) -> np.ndarray:
    """A fixed ``[num_classes, channels]`` table of well separated class colours in [40, 215]."""
    if channels == 1:
        return np.linspace(40, 215, num_classes)[:, None]
    rng = np.random.default_rng(1234)
    return rng.uniform(40, 215, size=(num_classes, channels))


def fake_images(
    n: int,
    num_classes: int = 10,
    size: int = 32,
    channels: int = 3,
    seed: int = 0,
    labels: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``uint8 [n, size, size, channels]`` and labels (balanced unless given)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes if labels is None else np.asarray(labels, dtype=np.int64)
    base = class_colours(num_classes, channels)[y]  # [n, C]
    low = torch.from_numpy(rng.normal(0, 30, size=(n, channels, 4, 4))).float()
    pattern = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).numpy()
    noise = rng.normal(0, 6, size=(n, channels, size, size))
    img = base[:, :, None, None] + pattern + noise
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(img), y.astype(np.int64)


def _pickle(obj: dict, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_fake_cifar(
    root: str | Path, name: str = "cifar10", n_train: int = 64, n_test: int = 32, seed: int = 0
) -> Path:
    """Write ``cifar-10-batches-py`` (5 train batches + test) or ``cifar-100-python``; return it."""
    root = Path(root)
    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    c = 10 if name == "cifar10" else 100
    xtr, ytr = fake_images(n_train, c, 32, 3, seed)
    xte, yte = fake_images(n_test, c, 32, 3, seed + 1)

    def flat(x: np.ndarray) -> np.ndarray:  # [N, H, W, C] -> [N, 3072] in CHW order
        return x.transpose(0, 3, 1, 2).reshape(len(x), -1)

    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        parts = np.array_split(np.arange(n_train), 5)
        for k, idx in enumerate(parts, 1):
            _pickle({"data": flat(xtr[idx]), "labels": ytr[idx].tolist()}, d / f"data_batch_{k}")
        _pickle({"data": flat(xte), "labels": yte.tolist()}, d / "test_batch")
        _pickle({"label_names": [f"class{i}" for i in range(c)]}, d / "batches.meta")
    else:
        d = root / "cifar-100-python"
        d.mkdir(parents=True, exist_ok=True)
        for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            _pickle(
                {"data": flat(x), "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()},
                d / split,
            )
        _pickle({"fine_label_names": [f"class{i}" for i in range(c)]}, d / "meta")
    return d


def _idx_bytes(arr: np.ndarray) -> bytes:
    if arr.ndim == 3:
        head = struct.pack(">IIII", 2051, arr.shape[0], arr.shape[1], arr.shape[2])
    else:
        head = struct.pack(">II", 2049, arr.shape[0])
    return head + arr.astype(np.uint8).tobytes()


def write_fake_fashion_mnist(
    root: str | Path,
    n_train: int = 64,
    n_test: int = 32,
    gz: bool = False,
    flat: bool = False,
    seed: int = 0,
) -> Path:
    """Write the four IDX files; under ``ROOT/FashionMNIST/raw`` (torchvision) or in ROOT (flat).

    ``gz=True`` writes ``*.gz`` files (the layout of Debian's ``/usr/share/datasets/fashion-mnist``).
    Returns the folder holding the files.
    """
    d = Path(root) if flat else Path(root) / "FashionMNIST" / "raw"
    d.mkdir(parents=True, exist_ok=True)
    xtr, ytr = fake_images(n_train, 10, 28, 1, seed)
    xte, yte = fake_images(n_test, 10, 28, 1, seed + 1)
    files = {
        "train-images-idx3-ubyte": xtr[..., 0],
        "train-labels-idx1-ubyte": ytr,
        "t10k-images-idx3-ubyte": xte[..., 0],
        "t10k-labels-idx1-ubyte": yte,
    }
    for fname, arr in files.items():
        data = _idx_bytes(arr)
        if gz:
            with gzip.open(d / f"{fname}.gz", "wb") as f:
                f.write(data)
        else:
            (d / fname).write_bytes(data)
    return d


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)


def write_fake_imagefolder(
    root: str | Path,
    classes: int = 3,
    per_class: int | Sequence[int] = 5,
    size: int = 32,
    splits: Sequence[str] = ("train", "test"),
    seed: int = 0,
    channels: int = 3,
) -> Path:
    """Write ``ROOT/<split>/class<k>/<i>.png``; ``per_class`` may list one count per class."""
    root = Path(root)
    counts = [per_class] * classes if isinstance(per_class, int) else list(per_class)
    if len(counts) != classes:
        raise ValueError(f"per_class has {len(counts)} entries for {classes} classes")
    for s, split in enumerate(splits):
        labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
        x, y = fake_images(len(labels), classes, size, channels, seed + s, labels=labels)
        for i, (img, c) in enumerate(zip(x, y, strict=True)):
            _save_png(img, root / split / f"class{c}" / f"{i:05d}.png")
    return root


def write_fake_stl10(
    root: str | Path, n_train: int = 20, n_test: int = 10, n_unlabeled: int = 30, seed: int = 0
) -> Path:
    """Write ``ROOT/stl10_binary`` (96x96, column-major records, labels 1..10); return it."""
    d = Path(root) / "stl10_binary"
    d.mkdir(parents=True, exist_ok=True)

    def record(x: np.ndarray) -> bytes:  # [N, H, W, C] -> [N, C, W, H] bytes
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1)).tobytes()

    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x, y = fake_images(n, 10, 96, 3, s)
        (d / f"{split}_X.bin").write_bytes(record(x))
        (d / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
    if n_unlabeled:
        x, _ = fake_images(n_unlabeled, 10, 96, 3, seed + 2)
        (d / "unlabeled_X.bin").write_bytes(record(x))
    (d / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    return d


def write_fake_filelist(
    root: str | Path,
    classes: int = 3,
    train_counts: Sequence[int] | None = None,
    per_class: int = 5,
    test_per_class: int = 3,
    size: int = 32,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write PNGs under ``ROOT/images`` and ImageNet-LT style lists ``train.txt``/``test.txt``.

    Each list line is ``relative/path.png label``. Returns ``(train_list, test_list)``.
    """
    root = Path(root)
    counts = list(train_counts) if train_counts is not None else [per_class] * classes
    out = []
    for s, (split, cnts) in enumerate((("train", counts), ("test", [test_per_class] * classes))):
        labels = np.concatenate([np.full(n, c) for c, n in enumerate(cnts)])
        x, y = fake_images(len(labels), classes, size, 3, seed + s, labels=labels)
        lines = []
        for i, (img, c) in enumerate(zip(x, y, strict=True)):
            rel = f"images/{split}/class{c}/{i:05d}.png"
            _save_png(img, root / rel)
            lines.append(f"{rel} {c}")
        path = root / f"{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        out.append(path)
    return out[0], out[1]
