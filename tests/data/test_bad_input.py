"""Bad input gives clear errors naming the key / path / file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision

from cld_lightning.app.errors import one_line
from cld_lightning.data import (
    CorruptImageError,
    DataLayoutError,
    DatasetNotFoundError,
    SSLDataModule,
)
from cld_lightning.data import fashion_mnist as fm
from cld_lightning.data.errors import DataError, DataSizeError
from cld_lightning.data.synthetic import (
    write_fake_cifar,
    write_fake_filelist,
    write_fake_imagefolder,
)
from tests.helpers import imagefolder_train_args


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
    with pytest.raises(CorruptImageError, match=bad.name) as e:
        next(it)
    it._shutdown_workers()  # join the worker now, not at garbage collection
    assert e.value.path == bad  # re-raised by the loader: the worker's message and path
    line = one_line(e.value)  # what cld-train / cld-eval print
    assert "Caught" not in line and "\n" not in line
    assert line.startswith(f"corrupt or unreadable image file: {bad}") and "skip_corrupt" in line


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


# ------------------------------------------------------ one line in cld-train / cld-eval (issue 26)
def _cli(module: str, *overrides: str) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"cld_lightning.app.{module}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _assert_one_line(out: str, command: str, *names: str) -> str:
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith(f"{command}: data error: ")]
    assert len(lines) == 1, out[-3000:]
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def test_cli_corrupt_test_image_costs_no_checkpoint_and_eval_names_root(tmp_path) -> None:
    root = tmp_path / "d"
    write_fake_imagefolder(root, classes=2, per_class=8, size=16, splits=("train", "test"))
    bad = _corrupt(root, split="test", cls="class1")
    run = tmp_path / "run"
    rc, out = _cli("train", *imagefolder_train_args(root, run))
    assert rc != 0
    _assert_one_line(out, "cld-train", str(bad), "data.skip_corrupt=true")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()  # the finished epoch's checkpoint, written although validation failed
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2

    rc, out = _cli("evaluate", f"ckpt_path={ckpt}", f"+data_overrides.root={tmp_path / 'gone'}")
    assert rc != 0
    _assert_one_line(out, "cld-eval", str(tmp_path / "gone"), "one sub-folder per class")


@pytest.mark.parametrize("case", ["missing", "empty", "batch"])
def test_cli_data_problems_are_one_line(tmp_path, case: str) -> None:
    root = tmp_path / "d"
    extra: list[str] = []
    if case == "missing":
        names = [str(root)]
    elif case == "empty":
        root.mkdir()
        names = [str(root)]
    else:
        write_fake_imagefolder(root, classes=2, per_class=2, size=16, splits=("train", "test"))
        extra, names = ["data.batch_size=32"], ["data.batch_size=32", "4 pretraining instances"]
    rc, out = _cli("train", *imagefolder_train_args(root, tmp_path / "run"), *extra)
    assert rc != 0
    _assert_one_line(out, "cld-train", *names)


def test_data_errors_share_a_base_and_keep_their_builtin_kinds() -> None:
    assert issubclass(DatasetNotFoundError, DataError) and issubclass(DatasetNotFoundError, OSError)
    assert issubclass(DataLayoutError, ValueError) and issubclass(CorruptImageError, OSError)
    assert issubclass(DataSizeError, ValueError) and issubclass(DataSizeError, DataError)
    err = DatasetNotFoundError("cifar10", ["/a", "/b"], "data.download=true")
    assert (
        one_line(err)
        == "cifar10: data not found at /a, /b; how to get the data: data.download=true"
    )


# ---------------------------------------------------------------- degenerate data (issue 26)
def test_imbalance_that_empties_classes_is_an_error(tmp_path, make_dm) -> None:
    write_fake_cifar(tmp_path, "cifar10", 200, 20)
    with pytest.raises(DataSizeError) as e:
        make_dm("cifar10", tmp_path, imbalance_ratio=100, max_train_samples=30)
    msg = str(e.value)
    assert "data.imbalance_ratio=100" in msg and "data.max_train_samples=30" in msg
    assert re.search(
        r"leave\(s\) \d+ of 10 classes without a pretraining image: \d+ \(class\d\)", msg
    )


def test_subset_that_empties_classes_without_long_tail_warns(tmp_path, make_dm) -> None:
    write_fake_cifar(tmp_path, "cifar10", 200, 20)
    with pytest.warns(RuntimeWarning, match=r"data.max_train_samples=3 leave\(s\) [7-9] of 10"):
        make_dm("cifar10", tmp_path, max_train_samples=3)


def test_one_class_data_set_warns(tmp_path, make_dm) -> None:
    write_fake_imagefolder(tmp_path, classes=1, per_class=4, splits=("train", "test"))
    with pytest.warns(RuntimeWarning, match="of 1 class: every kNN and linear-probe accuracy"):
        make_dm("imagefolder", tmp_path, test_dir="test", image_size=32)
    write_fake_cifar(tmp_path, "cifar10", 40, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_dm("cifar10", tmp_path)
