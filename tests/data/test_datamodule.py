"""Datamodule batches, attributes, subsets, loaders and the Hydra configs in conf/data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cld_lightning.data import SSLDataModule, synthetic
from cld_lightning.data import fashion_mnist as fm

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"
EXPECTED_CONFIGS = {
    "fashion_mnist", "fashion_mnist_lt", "fashion_mnist_correlated", "cifar10", "cifar100",
    "cifar10_lt", "cifar100_lt", "stl10", "imagefolder", "imagenet100", "kitchen_hc", "filelist",
}  # fmt: skip


def _check_batches(dm, views_expected: int, channels: int, size: int) -> None:
    views, target, index = next(iter(dm.train_dataloader()))
    b = dm.batch_size
    assert isinstance(views, list) and len(views) == views_expected
    for v in views:
        assert v.shape == (b, channels, size, size) and v.dtype == torch.float32
    assert target.shape == (b,) and target.dtype == torch.long
    assert index.shape == (b,) and index.dtype == torch.long
    assert len(set(index.tolist())) == b
    assert int(index.max()) < dm.num_train_samples
    assert torch.equal(target, dm.train_targets[index])
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    for loader, ds in zip(loaders, (dm.memory_dataset, dm.test_dataset), strict=True):
        img, t, i = next(iter(loader))
        assert isinstance(img, torch.Tensor) and img.shape[1:] == (channels, size, size)
        assert i.tolist() == list(range(len(i)))  # not shuffled
        assert sum(len(x[1]) for x in loader) == len(ds)


def test_cifar_mocov2_three_views(tmp_path, make_dm):
    synthetic.write_fake_cifar(tmp_path, "cifar10", 64, 32)
    dm = make_dm("cifar10", tmp_path, augmentation="mocov2_erasing", num_views=3, batch_size=8)
    _check_batches(dm, 3, 3, 32)
    assert len(dm.train_dataloader()) == 8


def test_fashion_mnist_batches(tmp_path, make_dm, monkeypatch):
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    synthetic.write_fake_fashion_mnist(tmp_path, gz=True)
    dm = make_dm("fashion_mnist", tmp_path, augmentation="byol", batch_size=8)
    _check_batches(dm, 2, 1, 28)


@pytest.mark.parametrize("dataset", ["stl10", "imagefolder", "kitchen_hc", "filelist"])
def test_other_datasets_batches(tmp_path, make_dm, dataset):
    kw = {}
    if dataset == "stl10":
        synthetic.write_fake_stl10(tmp_path, 10, 10, 10)
        size, kw["augmentation"] = 96, "infomin"
    elif dataset == "filelist":
        tr, te = synthetic.write_fake_filelist(tmp_path, classes=2, per_class=4)
        size, kw = 32, {"train_list": str(tr), "test_list": str(te), "image_size": 32}
    else:
        synthetic.write_fake_imagefolder(tmp_path, classes=2, per_class=4, size=36)
        size, kw = 32, {"test_dir": "test", "image_size": 32}
    _check_batches(make_dm(dataset, tmp_path, **kw), 2, 3, size)


def test_attributes_before_and_after_setup(tmp_path):
    synthetic.write_fake_cifar(tmp_path, "cifar100", 300, 20)
    dm = SSLDataModule("cifar100", root=str(tmp_path), download=False, num_workers=0)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (100, 3, 32)
    with pytest.raises(RuntimeError, match="after datamodule.setup"):
        _ = dm.num_train_samples
    dm.setup("fit")
    assert dm.num_train_samples == 300 and dm.train_targets.shape == (300,)
    assert dm.class_counts.tolist() == [3] * 100
    dm.setup("validate")  # idempotent
    assert dm.num_train_samples == 300


def test_max_train_samples_deterministic(tmp_path, make_dm):
    synthetic.write_fake_cifar(tmp_path, "cifar10", 100, 40)
    a = make_dm("cifar10", tmp_path, max_train_samples=30, max_test_samples=12, seed=0)
    b = make_dm("cifar10", tmp_path, subset_size=30, max_test_samples=12, seed=0)
    c = make_dm("cifar10", tmp_path, max_train_samples=30, seed=1)
    assert a.num_train_samples == 30 and len(a.test_dataset) == 12 and len(a.memory_dataset) == 30
    assert torch.equal(a.train_dataset.source.indices, b.train_dataset.source.indices)
    assert not torch.equal(a.train_dataset.source.indices, c.train_dataset.source.indices)
    assert len(set(a.train_dataset.source.indices.tolist())) == 30


def test_workers_and_persistent_flags(tmp_path, make_dm):
    synthetic.write_fake_cifar(tmp_path, "cifar10", 32, 8)
    dm = make_dm("cifar10", tmp_path, num_workers=2, batch_size=8)
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 2 and loader.drop_last
    batches = list(loader)
    assert len(batches) == 4
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(32))
    assert not make_dm("cifar10", tmp_path, num_workers=0).train_dataloader().persistent_workers


def test_hydra_instantiate_with_overrides(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    synthetic.write_fake_cifar(tmp_path, "cifar10", 200, 20)
    primary = tmp_path / "conf"
    primary.mkdir()
    (primary / "train.yaml").write_text(
        "defaults:\n  - data: cifar10\n  - _self_\nseed: 3\npaths:\n  data_dir: data\n"
    )
    (primary / "data").symlink_to(CONF)
    with initialize_config_dir(str(primary), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=cifar10_lt",
                f"paths.data_dir={tmp_path}",
                "data.imbalance_ratio=10",
                "data.download=false",
                "data.num_workers=0",
                "data.copies=2",
            ],
        )
    dm = instantiate(cfg.data)
    assert isinstance(dm, SSLDataModule) and dm.seed == 3 and dm.root == tmp_path
    dm.setup("fit")
    expected = [int(20 * 0.1 ** (c / 9)) for c in range(10)]
    assert dm.num_train_samples == 2 * sum(expected)
    for name in EXPECTED_CONFIGS:  # every config composes and constructs
        with initialize_config_dir(str(primary), version_base="1.3"):
            cfg = compose("train", overrides=[f"data={name}"])
        assert instantiate(cfg.data).dataset_name == cfg.data.dataset


def test_datasets_pickle_for_spawned_workers(tmp_path, make_dm):
    import pickle

    synthetic.write_fake_stl10(tmp_path, 10, 4, 6)
    dm = make_dm("stl10", tmp_path, copies=2, num_sources=5, seed=1)
    ds = pickle.loads(pickle.dumps(dm.train_dataset))
    assert len(ds) == 10 and torch.equal(ds.targets, dm.train_targets)
    assert torch.equal(ds.source.get_image(3), dm.train_dataset.source.get_image(3))
    assert ds[3][1:] == dm.train_dataset[3][1:]


@pytest.mark.parametrize(
    ("augmentation", "sizes"), [("infomin", [32, 32]), ("infomin_jigsaw", [32, 32, 36])]
)
def test_infomin_augment_on_device_views(tmp_path, make_dm, augmentation, sizes):
    """``augment_on=device`` with InfoMin: the loader yields uint8 images, ``to_views`` makes the
    views (the jigsaw view at round(255/224·32) = 36), reproducibly per (seed, epoch, indices)."""
    synthetic.write_fake_cifar(tmp_path, "cifar10", 32, 8)
    dm = make_dm(
        "cifar10", tmp_path, augmentation=augmentation, augment_on="device", num_views=len(sizes)
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (4, 3, 32, 32)
    views, target, index = dm.to_views(batch, epoch=1)
    assert [v.shape for v in views] == [(4, 3, s, s) for s in sizes]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    assert torch.equal(target, batch[1]) and torch.equal(index, batch[2])
    again, _, _ = dm.to_views(batch, epoch=1)
    other, _, _ = dm.to_views(batch, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    assert not torch.equal(views[0], other[0])


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_crop_size_sets_training_views_only(tmp_path, make_dm, monkeypatch, augment_on):
    """data.crop_size: the training views are crop_size px (per-sample and batched builders
    alike); the kNN memory and test images stay at the evaluation size (28 px here)."""
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    synthetic.write_fake_fashion_mnist(tmp_path, gz=True)
    dm = make_dm(
        "fashion_mnist",
        tmp_path,
        augmentation="grayscale",
        batch_size=8,
        crop_size=20,
        augment_on=augment_on,
        num_workers=0,
        persistent_workers=False,
    )
    views, _, _ = dm.to_views(next(iter(dm.train_dataloader())))
    assert [tuple(v.shape) for v in views] == [(8, 1, 20, 20)] * 2
    assert dm.image_size == 28
    for loader in dm.val_dataloader():
        assert tuple(next(iter(loader))[0].shape[1:]) == (1, 28, 28)


def test_crop_size_too_small_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.crop_size"):
        SSLDataModule("fashion_mnist", root=str(tmp_path), crop_size=4, download=False)
