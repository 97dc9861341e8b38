"""Every data set with class names exposes them as ``datamodule.class_names`` (plot legends)."""

from __future__ import annotations

import pytest

from cld_lightning.data import SSLDataModule, synthetic
from cld_lightning.data.cifar import cifar_class_names
from cld_lightning.data.stl10 import CLASS_NAMES as STL10_NAMES

CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def test_before_setup_there_are_no_names(tmp_path):
    dm = SSLDataModule(dataset="cifar10", root=str(tmp_path), download=False)
    assert dm.class_names == []


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_names_come_from_the_meta_file(tmp_path, make_dm, name):
    synthetic.write_fake_cifar(tmp_path, name, n_train=20, n_test=10)  # meta: class0, class1, ...
    dm = make_dm(name, tmp_path)
    assert dm.class_names == [f"class{i}" for i in range(dm.num_classes)]


def test_cifar_without_meta_file(tmp_path):
    d = synthetic.write_fake_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    (d / "batches.meta").unlink()
    assert cifar_class_names(tmp_path, "cifar10") == CIFAR10_NAMES
    (d / "batches.meta").write_bytes(b"not a pickle")
    assert cifar_class_names(tmp_path, "cifar10") == CIFAR10_NAMES
    d100 = synthetic.write_fake_cifar(tmp_path, "cifar100", n_train=20, n_test=10)
    (d100 / "meta").unlink()
    assert cifar_class_names(tmp_path, "cifar100") == []  # legends fall back to numbers


def test_fashion_mnist_names(tmp_path, make_dm):
    synthetic.write_fake_fashion_mnist(tmp_path, n_train=20, n_test=10)
    names = make_dm("fashion_mnist", tmp_path).class_names
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10


def test_stl10_names(tmp_path, make_dm):
    d = synthetic.write_fake_stl10(tmp_path, n_train=20, n_test=10, n_unlabeled=0)
    dm = make_dm("stl10", tmp_path, use_unlabeled=False)
    assert dm.class_names == [f"class{i}" for i in range(10)]  # the archive's class_names.txt
    (d / "class_names.txt").unlink()
    assert make_dm("stl10", tmp_path, use_unlabeled=False).class_names == STL10_NAMES
    assert STL10_NAMES[:3] == ["airplane", "bird", "car"] and len(STL10_NAMES) == 10


def test_imagefolder_names_are_the_folder_names(tmp_path, make_dm):
    synthetic.write_fake_imagefolder(tmp_path, classes=3, per_class=2, splits=("train", "val"))
    assert make_dm("imagefolder", tmp_path, image_size=32).class_names == [
        "class0",
        "class1",
        "class2",
    ]
