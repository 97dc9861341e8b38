"""Bad input gives clear errors naming the key / path / file."""

from __future__ import annotations

import warnings

import pytest
import torchvision

from cld_lightning.data import (
    CorruptImageError,
    DataLayoutError,
    DatasetNotFoundError,
    SSLDataModule,
)
from cld_lightning.data import fashion_mnist as fm
from cld_lightning.data.synthetic import (
    write_fake_cifar,
    write_fake_filelist,
    write_fake_imagefolder,
)


def _corrupt(imagefolder, split="train", cls="class1", idx=None):
    """Overwrite one PNG with garbage; return its path."""
    files = sorted((imagefolder / split / cls).glob("*.png"))
    p = files[0] if idx is None else files[idx]
    p.write_bytes(b"this is not a png at all")
    return p


def test_missing_cifar_root_names_path_and_how(tmp_path, make_dm):
    root = tmp_path / "no_such_dir"
    with pytest.raises(DatasetNotFoundError) as e:
        make_dm("cifar10", root, download=False)
    msg = str(e.value)
    assert str(root / "cifar-10-batches-py" / "data_batch_1") in msg
    assert "data.download=true" in msg and "cifar-10-python.tar.gz" in msg


def test_cifar_download_failure_is_wrapped(tmp_path, make_dm, monkeypatch):
    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    with pytest.raises(DatasetNotFoundError) as e:
        make_dm("cifar100", tmp_path, download=True)
    msg = str(e.value)
    assert str(tmp_path / "cifar-100-python") in msg and "name resolution" in msg


def test_prepare_data_download_failure(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    dm = SSLDataModule("cifar10", root=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError, match="network unreachable"):
        dm.prepare_data()


def test_missing_fashion_mnist_lists_all_paths(tmp_path, make_dm, monkeypatch):
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "sys")
    with pytest.raises(DatasetNotFoundError) as e:
        make_dm("fashion_mnist", tmp_path / "r", download=False)
    msg = str(e.value)
    for p in (tmp_path / "r" / "FashionMNIST" / "raw", tmp_path / "r", tmp_path / "sys"):
        assert f"  - {p}\n" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_corrupt_cifar_batch_names_file(tmp_path, make_dm):
    d = write_fake_cifar(tmp_path, "cifar10", 20, 10)
    (d / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataLayoutError, match="data_batch_3"):
        make_dm("cifar10", tmp_path)


def test_imagefolder_missing_root(tmp_path, make_dm):
    with pytest.raises(DatasetNotFoundError) as e:
        make_dm("imagefolder", tmp_path / "imagenet")
    assert str(tmp_path / "imagenet") in str(e.value) and "one sub-folder per class" in str(e.value)


def test_imagefolder_missing_split(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, splits=("train",))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "val")):
        make_dm("imagefolder", tmp_path)


def test_imagefolder_without_class_folders(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=2, per_class=2)
    flat = tmp_path / "train"
    for p in flat.glob("*/*.png"):
        p.rename(flat / f"{p.parent.name}_{p.name}")
    for d in flat.iterdir():
        if d.is_dir():
            d.rmdir()
    with pytest.raises(DataLayoutError) as e:
        make_dm("imagefolder", tmp_path, test_dir="test")
    msg = str(e.value)
    assert "expected class sub-folders" in msg and "found 4 image file(s) directly" in msg


def test_imagefolder_empty_class_folder(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=2, per_class=2)
    (tmp_path / "train" / "zebra").mkdir()
    with pytest.raises(DataLayoutError, match="without images.*zebra"):
        make_dm("imagefolder", tmp_path, test_dir="test")


def test_imagenet100_missing_listed_class(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=2, per_class=2, splits=("train", "val"))
    (tmp_path / "l.txt").write_text("class0\nn99999999\n")
    with pytest.raises(DataLayoutError, match="n99999999"):
        make_dm("imagenet100", tmp_path, class_list=str(tmp_path / "l.txt"))
    with pytest.raises(ValueError, match="data.class_list"):
        make_dm("imagenet100", tmp_path)


def test_corrupt_image_error_names_file(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=3, per_class=4)
    bad = _corrupt(tmp_path)
    dm = make_dm("imagefolder", tmp_path, test_dir="test", image_size=32)
    i = dm.train_dataset.source.paths.index(str(bad))
    with pytest.raises(CorruptImageError) as e:
        dm.train_dataset[i]
    assert str(bad) in str(e.value) and "data.skip_corrupt=true" in str(e.value)
    assert dm.train_dataset[0][1] == 0  # the good ones still load


def test_corrupt_image_in_worker_names_file(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=2, per_class=3)
    bad = _corrupt(tmp_path)
    dm = make_dm(
        "imagefolder",
        tmp_path,
        test_dir="test",
        image_size=32,
        num_workers=1,
        batch_size=6,
        persistent_workers=False,
    )
    it = iter(dm.train_dataloader())
    with pytest.raises(CorruptImageError, match=bad.name):
        next(it)
    it._shutdown_workers()  # join the worker now, not at garbage collection


def test_skip_corrupt_counts_in_warning(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=3, per_class=4)
    _corrupt(tmp_path, idx=0)
    _corrupt(tmp_path, idx=2)
    trunc = sorted((tmp_path / "train" / "class2").glob("*.png"))[1]
    trunc.write_bytes(trunc.read_bytes()[:60])  # truncated PNG
    with pytest.warns(RuntimeWarning, match=r"skipped 3 corrupt image\(s\) of 12"):
        dm = make_dm("imagefolder", tmp_path, test_dir="test", image_size=32, skip_corrupt=True)
    assert dm.num_train_samples == 9 and dm.class_counts.tolist() == [4, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(dm.num_train_samples):
            dm.train_dataset[i]


def test_cached_corrupt_image_at_setup(tmp_path, make_dm):
    write_fake_imagefolder(tmp_path, classes=2, per_class=3)
    bad = _corrupt(tmp_path, split="test", cls="class0")
    with pytest.raises(CorruptImageError, match=bad.name):
        make_dm("kitchen_hc", tmp_path)
    with pytest.warns(RuntimeWarning, match=r"skipped 1 corrupt image\(s\) of 6"):
        dm = make_dm("kitchen_hc", tmp_path, skip_corrupt=True)
    assert len(dm.test_dataset) == 5


def test_filelist_bad_line_names_file_and_line(tmp_path, make_dm):
    tr, te = write_fake_filelist(tmp_path, classes=2, per_class=2)
    tr.write_text(tr.read_text() + "images/x.png cat\n")
    with pytest.raises(DataLayoutError, match=r"train.txt:5: expected 'relative/path.jpg label'"):
        make_dm("filelist", tmp_path, train_list=str(tr), test_list=str(te))


def test_filelist_missing_image(tmp_path, make_dm):
    tr, te = write_fake_filelist(tmp_path, classes=2, per_class=2)
    te.write_text(te.read_text() + "images/gone.png 1\n")
    with pytest.raises(DatasetNotFoundError, match="gone.png"):
        make_dm("filelist", tmp_path, train_list=str(tr), test_list=str(te))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"dataset": "mnist"}, "unknown data.dataset='mnist'; valid: cifar10, cifar100"),
        ({"augmentation": "simclr"}, "valid: npid, mocov2, mocov2_erasing, byol, infomin"),
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1"),
        ({"copies": 0}, "data.copies must be an integer >= 1"),
        ({"num_sources": 0}, "data.num_sources"),
        ({"imbalance_ratio": 0.9}, "data.imbalance_ratio must be >= 1"),
        ({"num_views": 0}, "data.num_views"),
        ({"num_workers": -1}, "data.num_workers"),
        ({"max_train_samples": 0}, "data.max_train_samples"),
        ({"crop_min_scale": 1.5}, "data.crop_min_scale"),
        ({"in_channels": 1}, "data.in_channels=1 but cifar10 has 3"),
        ({"subset_size": 5, "max_train_samples": 6}, "data.subset_size is an alias"),
    ],
)
def test_constructor_validation(tmp_path, kw, match):
    kw = {"dataset": "cifar10", "root": str(tmp_path), **kw}
    with pytest.raises(ValueError, match=match):
        SSLDataModule(**kw)


def test_batch_larger_than_data_with_drop_last(tmp_path, make_dm):
    write_fake_cifar(tmp_path, "cifar10", 20, 10)
    dm = make_dm("cifar10", tmp_path, batch_size=32)
    with pytest.raises(ValueError, match="data.batch_size=32 is larger than the 20"):
        dm.train_dataloader()
    assert len(make_dm("cifar10", tmp_path, batch_size=32, drop_last=False).train_dataloader()) == 1


def test_num_sources_larger_than_data(tmp_path, make_dm):
    write_fake_cifar(tmp_path, "cifar10", 20, 10)
    with pytest.raises(ValueError, match="data.num_sources=50 exceeds the 20"):
        make_dm("cifar10", tmp_path, copies=2, num_sources=50)
