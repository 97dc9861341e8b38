"""Each data set read from tiny generated files in its real on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cld_lightning.data import class_counts, synthetic
from cld_lightning.data import fashion_mnist as fm
from cld_lightning.data.fashion_mnist import find_fashion_mnist, read_idx


def _pixels(dm, i: int, which: str = "test") -> torch.Tensor:
    return getattr(dm, f"{which}_dataset").source.get_image(i)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickles(tmp_path, make_dm, name, classes):
    synthetic.write_fake_cifar(tmp_path, name, n_train=203, n_test=30, seed=5)
    dm = make_dm(name, tmp_path)
    x, y = synthetic.fake_images(30, classes, 32, 3, seed=6)
    assert dm.num_train_samples == 203 and len(dm.test_dataset) == 30
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (classes, 3, 32)
    assert torch.equal(_pixels(dm, 7), torch.from_numpy(x[7]).permute(2, 0, 1))
    assert dm.test_dataset.targets.tolist() == y.tolist()
    img, target, index = dm.test_dataset[7]
    assert img.shape == (3, 32, 32) and (target, index) == (int(y[7]), 7)


def _check_fmnist(dm, n_train=64, n_test=32):
    x, y = synthetic.fake_images(n_test, 10, 28, 1, seed=1)
    assert dm.num_train_samples == n_train and len(dm.test_dataset) == n_test
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    assert torch.equal(_pixels(dm, 3), torch.from_numpy(x[3]).permute(2, 0, 1))
    assert dm.test_dataset.targets.tolist() == y.tolist()
    views, _, _ = dm.train_dataset[0]
    assert views[0].shape == (1, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_torchvision_layout(tmp_path, make_dm, monkeypatch, gz):
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    d = synthetic.write_fake_fashion_mnist(tmp_path, gz=gz)
    assert d == tmp_path / "FashionMNIST" / "raw"
    _check_fmnist(make_dm("fashion_mnist", tmp_path))


def test_fashion_mnist_gz_directly_in_root(tmp_path, make_dm, monkeypatch):
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    synthetic.write_fake_fashion_mnist(tmp_path, gz=True, flat=True)
    _check_fmnist(make_dm("fashion_mnist", tmp_path))


def test_fashion_mnist_system_fallback(tmp_path, make_dm, monkeypatch):
    system = tmp_path / "usr_share_fmnist"
    synthetic.write_fake_fashion_mnist(system, n_train=40, n_test=20, gz=True, flat=True)
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", system)
    empty_root = tmp_path / "root"
    empty_root.mkdir()
    files = find_fashion_mnist(empty_root)
    assert files["train_images"] == system / "train-images-idx3-ubyte.gz"
    _check_fmnist(make_dm("fashion_mnist", empty_root), n_train=40, n_test=20)


def test_fashion_mnist_root_wins_over_system(tmp_path, make_dm, monkeypatch):
    system = tmp_path / "system"
    synthetic.write_fake_fashion_mnist(system, n_train=40, n_test=20, gz=True, flat=True)
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", system)
    synthetic.write_fake_fashion_mnist(tmp_path / "root")
    _check_fmnist(make_dm("fashion_mnist", tmp_path / "root"))


def test_read_idx_gz_and_plain_agree(tmp_path):
    a = synthetic.write_fake_fashion_mnist(tmp_path / "a", gz=False)
    b = synthetic.write_fake_fashion_mnist(tmp_path / "b", gz=True)
    x1 = read_idx(a / "train-images-idx3-ubyte")
    x2 = read_idx(b / "train-images-idx3-ubyte.gz")
    assert x1.shape == (64, 28, 28) and np.array_equal(x1, x2)
    assert read_idx(a / "train-labels-idx1-ubyte").tolist() == (np.arange(64) % 10).tolist()


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_system_fashion_mnist(tmp_path, make_dm):
    dm = make_dm("fashion_mnist", tmp_path / "empty")
    assert dm.num_train_samples == 60000 and len(dm.test_dataset) == 10000
    assert class_counts(dm.train_targets, 10).tolist() == [6000] * 10


def test_stl10_binary(tmp_path, make_dm):
    synthetic.write_fake_stl10(tmp_path, n_train=20, n_test=10, n_unlabeled=30)
    dm = make_dm("stl10", tmp_path)
    assert dm.num_train_samples == 50
    assert dm.train_targets[:20].tolist() == (np.arange(20) % 10).tolist()
    assert (dm.train_targets[20:] == -1).all()
    assert len(dm.memory_dataset) == 20 and dm.class_counts.tolist() == [2] * 10
    x, y = synthetic.fake_images(10, 10, 96, 3, seed=1)
    assert torch.equal(_pixels(dm, 4), torch.from_numpy(x[4]).permute(2, 0, 1))
    assert dm.test_dataset.targets.tolist() == y.tolist()
    unl, _ = synthetic.fake_images(30, 10, 96, 3, seed=2)
    views, target, index = dm.train_dataset[25]
    assert (target, index) == (-1, 25) and views[0].shape == (3, 96, 96)
    assert torch.equal(
        dm.train_dataset.source.get_image(25), torch.from_numpy(unl[5]).permute(2, 0, 1)
    )
    dm2 = make_dm("stl10", tmp_path, use_unlabeled=False)
    assert dm2.num_train_samples == 20 and (dm2.train_targets >= 0).all()


def test_imagefolder(tmp_path, make_dm):
    synthetic.write_fake_imagefolder(
        tmp_path, classes=3, per_class=[4, 3, 2], size=40, splits=("train", "val")
    )
    dm = make_dm("imagefolder", tmp_path, image_size=32)
    assert dm.num_classes == 3 and dm.class_names == ["class0", "class1", "class2"]
    assert dm.class_counts.tolist() == [4, 3, 2]
    views, target, index = dm.train_dataset[4]
    assert views[0].shape == (3, 32, 32) and (target, index) == (1, 4)
    img, _, _ = dm.test_dataset[0]
    assert img.shape == (3, 32, 32)  # eval: resize to 32, center crop


def test_imagenet100_class_list(tmp_path, make_dm):
    synthetic.write_fake_imagefolder(tmp_path, classes=4, per_class=2, splits=("train", "val"))
    (tmp_path / "list.txt").write_text("# subset\nclass3\nclass1\n\n")
    dm = make_dm("imagenet100", tmp_path, class_list=str(tmp_path / "list.txt"), image_size=32)
    assert dm.num_classes == 2 and dm.class_names == ["class1", "class3"]
    assert dm.num_train_samples == 4 and len(dm.test_dataset) == 4
    # class3's images get label 1
    assert dm.train_dataset.source.paths[2].endswith("class3/00006.png")
    assert dm.train_targets.tolist() == [0, 0, 1, 1]


def test_kitchen_hc_cached(tmp_path, make_dm):
    synthetic.write_fake_imagefolder(tmp_path, classes=3, per_class=4, size=48)
    dm = make_dm("kitchen_hc", tmp_path)
    src = dm.train_dataset.source
    assert src.images.shape == (12, 3, 32, 32) and src.images.dtype == torch.uint8
    assert dm.image_size == 32 and dm.num_classes == 3
    assert dm.train_dataset[0][0][0].shape == (3, 32, 32)


def test_filelist(tmp_path, make_dm):
    tr, te = synthetic.write_fake_filelist(tmp_path, classes=3, per_class=4, test_per_class=2)
    dm = make_dm("filelist", tmp_path, train_list=str(tr), test_list=str(te), image_size=32)
    assert dm.num_train_samples == 12 and len(dm.test_dataset) == 6
    assert dm.test_dataset.targets.tolist() == [0, 0, 1, 1, 2, 2]
    img, target, index = dm.test_dataset[5]
    assert img.shape == (3, 32, 32) and (target, index) == (2, 5)


def test_synthetic_images_carry_class_signal():
    x, y = synthetic.fake_images(200, 10, 32, 3, seed=0)
    f = torch.from_numpy(x).float().flatten(1)
    d = torch.cdist(f, f)
    d.fill_diagonal_(float("inf"))
    nn_acc = (torch.from_numpy(y)[d.argmin(1)] == torch.from_numpy(y)).float().mean()
    assert nn_acc > 0.9
