"""``data.split_file``: a published pretraining subset (SDCLR / BCL CIFAR-LT index files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cld_lightning.data import SSLDataModule
from cld_lightning.data.split_file import read_split_file
from cld_lightning.data.synthetic import write_fake_cifar


@pytest.fixture
def cifar_root(tmp_path):
    write_fake_cifar(tmp_path, "cifar10", n_train=60, n_test=20)
    return tmp_path


def _all_train_targets(root) -> torch.Tensor:
    dm = SSLDataModule("cifar10", root=str(root), download=False, num_workers=0, batch_size=4)
    dm.setup("fit")
    return dm.train_targets


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_split_file_selects_the_listed_training_images(cifar_root, make_dm, fmt) -> None:
    # an SDCLR-style long tail: class c keeps the first (6 - c // 2) of its images
    targets = _all_train_targets(cifar_root)
    keep = []
    for c in range(10):
        members = (targets == c).nonzero().flatten().tolist()
        keep += members[: max(1, 6 - c // 2)]
    path = cifar_root / f"split1_D_i.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(keep[::-1]))  # order does not matter
    else:
        path.write_text("# kept indices\n" + "\n".join(map(str, keep)) + "\n\n")
    dm = make_dm("cifar10", cifar_root, split_file=str(path))
    assert dm.num_train_samples == len(keep)
    assert dm.train_targets.tolist() == targets[sorted(keep)].tolist()
    expected = torch.bincount(targets[keep], minlength=10)
    assert dm.class_counts.tolist() == expected.tolist()
    # the test split stays balanced and whole
    assert len(dm.test_dataset) == 20


def test_split_file_then_max_train_samples(cifar_root, make_dm) -> None:
    path = cifar_root / "split.txt"
    path.write_text("\n".join(str(i) for i in range(40)))
    dm = make_dm("cifar10", cifar_root, split_file=str(path), max_train_samples=30)
    assert dm.num_train_samples == 30


def test_missing_split_file_named_at_construction(cifar_root) -> None:
    missing = cifar_root / "nope" / "split1_D_i.txt"
    with pytest.raises(ValueError, match=r"^data\.split_file: no such file .*split1_D_i\.txt'$"):
        SSLDataModule("cifar10", root=str(cifar_root), split_file=str(missing))


def test_split_file_and_imbalance_ratio_exclusive(cifar_root) -> None:
    path = cifar_root / "split.txt"
    path.write_text("0\n1\n")
    with pytest.raises(ValueError, match="set data.imbalance_ratio=null"):
        SSLDataModule("cifar10", root=str(cifar_root), split_file=str(path), imbalance_ratio=10)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("0\n5\n60\n", r"holds index 60 \(1 out of range in all\).*60 images, indices 0\.\.59"),
        ("3\n-1\n", "holds index -1"),
        ("1\n2\n1\n", "lists index 1 more than once"),
        ("4\nairplane/0001.png\n", "line 2: expected one integer index"),
        ("# nothing\n\n", "lists no index"),
    ],
)
def test_bad_split_file_one_line_naming_the_file(cifar_root, make_dm, content, match) -> None:
    path = cifar_root / "bad_split.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        make_dm("cifar10", cifar_root, split_file=str(path))
    message = str(info.value)
    assert "bad_split.txt" in message and "\n" not in message


def test_json_split_file_must_hold_integers(tmp_path) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"indices": [1, 2]}))
    with pytest.raises(ValueError, match="a JSON split file holds a list of integers"):
        read_split_file(path, 10)
    path.write_text(json.dumps([3, 1, 2]))
    assert read_split_file(path, 10).tolist() == [1, 2, 3]
    assert read_split_file(path, 10).dtype == np.int64
