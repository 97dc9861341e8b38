"""``data.decoder``: torchvision decoding on the model's device (CPU here), DALI error paths."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from cld_lightning.data import SSLDataModule, synthetic
from cld_lightning.data.batch_augment import (
    BatchMultiViewAugment,
    resized_crop,
    sample_crop_boxes,
    view_recipes,
)
from cld_lightning.data.dali import file_order, shard_batches
from cld_lightning.data.errors import CorruptImageError
from cld_lightning.data.gpu_decode import (
    JPEG_MAGIC,
    DecodedMultiViewAugment,
    EncodedBatch,
    EncodedDataset,
    collate_encoded,
    crop_views,
    decode_jpegs,
    jpeg_components,
    sample_crop_boxes_sized,
    write_jpeg_imagefolder,
)
from cld_lightning.data.sources import FileImages, decode_image
from tests.helpers import FAST_TRAIN, assert_jigsaw_needs_dali


@pytest.fixture
def jpeg_root(tmp_path: Path) -> Path:
    return Path(write_jpeg_imagefolder(str(tmp_path / "jpeg"), classes=3, per_class=4))


def _tv_dm(root: Path, **kw) -> SSLDataModule:
    kw.setdefault("augment_on", "device")
    kw.setdefault("decoder", "torchvision")
    dm = SSLDataModule(
        dataset="imagefolder",
        root=str(root),
        batch_size=4,
        num_workers=0,
        download=False,
        image_size=32,
        **kw,
    )
    dm.setup("fit")
    return dm


def test_decoded_images_match_pil(jpeg_root: Path) -> None:
    paths = sorted(str(p) for p in (jpeg_root / "train").rglob("*.jpg"))
    ds = EncodedDataset(FileImages(paths, [0] * len(paths)))
    batch, _, _ = collate_encoded([ds[i] for i in range(len(ds))])
    assert all(d.dtype == torch.uint8 and d.dim() == 1 for d in batch.data)
    for channels in (3, 1):
        decoded = decode_jpegs(batch, "cpu", channels)
        for img, path in zip(decoded, paths, strict=True):
            ref = decode_image(path, channels)
            assert img.shape == ref.shape and img.dtype == torch.uint8
            diff = (img.int() - ref.int()).abs()
            assert diff.float().mean() < 1.0 and diff.max() <= 8, (path, diff.max())


def test_non_jpeg_files_are_reencoded_and_corrupt_ones_named(tmp_path: Path) -> None:
    root = synthetic.write_fake_imagefolder(tmp_path / "png", classes=2, per_class=2, size=16)
    paths = sorted(str(p) for p in (root / "train").rglob("*.png"))
    ds = EncodedDataset(FileImages(paths, [0, 0, 1, 1]))
    data, path, target, index = ds[3]
    assert bytes(data[:3].tolist()) == JPEG_MAGIC and (path, target, index) == (paths[3], 1, 3)
    img = decode_jpegs(EncodedBatch([data], [path]), "cpu")[0]
    assert img.shape == (3, 16, 16)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(JPEG_MAGIC + b"\x00" * 64)
    raw = torch.frombuffer(bytearray(bad.read_bytes()), dtype=torch.uint8)
    with pytest.raises(CorruptImageError, match="bad.jpg"):
        decode_jpegs(EncodedBatch([data, raw], [path, str(bad)]), "cpu")


def test_sized_crop_sampler_equals_the_fixed_size_one_and_stays_inside() -> None:
    for h, w in ((32, 32), (30, 90), (90, 30)):
        n = 64
        a = sample_crop_boxes(n, h, w, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(3))
        b = sample_crop_boxes_sized(
            torch.full((n,), h),
            torch.full((n,), w),
            (0.2, 1.0),
            (3 / 4, 4 / 3),
            torch.Generator().manual_seed(3),
        )
        assert torch.equal(a, b), (h, w)
    heights = torch.randint(20, 200, (500,))
    widths = torch.randint(20, 200, (500,))
    boxes = sample_crop_boxes_sized(heights, widths, (0.2, 1.0), (3 / 4, 4 / 3), torch.Generator())
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= heights).all() and (left + w <= widths).all()
    # the fallback (extreme aspect ratios): central crop of the closest allowed aspect
    fb = sample_crop_boxes_sized(
        torch.tensor([10, 400]),
        torch.tensor([400, 10]),
        (0.99, 1.0),
        (3 / 4, 4 / 3),
        torch.Generator(),
    )
    ref0 = sample_crop_boxes(1, 10, 400, (0.99, 1.0), (3 / 4, 4 / 3), torch.Generator())
    ref1 = sample_crop_boxes(1, 400, 10, (0.99, 1.0), (3 / 4, 4 / 3), torch.Generator())
    assert torch.equal(fb, torch.cat([ref0, ref1]))


def test_crop_views_equals_resized_crop_and_handles_mixed_sizes() -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 3, 24, 36, generator=gen) * 255).to(torch.uint8)
    boxes = torch.stack(
        [sample_crop_boxes(5, 24, 36, (0.2, 1.0), (3 / 4, 4 / 3), gen) for _ in range(2)]
    )
    out = crop_views(list(x), boxes, 16)
    for v in range(2):
        ref = resized_crop(x.float().div(255.0), boxes[v], 16).clamp(0, 1)
        torch.testing.assert_close(out[v], ref)
    mixed = [x[0], x[1, :, :20, :30], x[2]]
    mb = boxes[:, :3].clone()
    mb[:, 1] = torch.tensor([0.0, 0.0, 20.0, 30.0])  # the whole of the smaller image
    out = crop_views(mixed, mb, 16)
    ref = resized_crop(x[1:2, :, :20, :30].float().div(255.0), mb[0, 1:2], 16).clamp(0, 1)
    torch.testing.assert_close(out[0, 1:2], ref)


def test_datamodule_decodes_on_the_device_and_views_are_seeded(jpeg_root: Path) -> None:
    dm = _tv_dm(jpeg_root, augmentation="mocov2")
    assert dm.image_size == 32
    batch = next(iter(dm.train_dataloader()))
    images, target, index = batch
    assert isinstance(images, EncodedBatch) and len(images) == 4 and target.shape == (4,)
    views, t2, i2 = dm.to_views(batch, epoch=1)
    assert len(views) == 2 and all(v.shape == (4, 3, 32, 32) for v in views)
    assert all(torch.isfinite(v).all() for v in views) and not torch.equal(views[0], views[1])
    again, _, _ = dm.to_views(batch, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    assert torch.equal(t2, target) and torch.equal(i2, index)
    # validation loaders keep the PIL path: fixed-size float images
    img, _, _ = next(iter(dm.val_dataloader()[1]))
    assert img.dtype == torch.float32 and img.shape[-2:] == (32, 32)


@pytest.mark.parametrize("augmentation", ["infomin", "infomin_jigsaw"])
def test_infomin_views_from_decoded_jpegs(jpeg_root: Path, augmentation: str) -> None:
    """InfoMin (RandAugment batched) on JPEGs decoded on the device: images of different sizes,
    the jigsaw view at its own size, seeded views."""
    dm = _tv_dm(jpeg_root, augmentation=augmentation, num_views=3)
    batch = next(iter(dm.train_dataloader()))
    views, _, _ = dm.to_views(batch, epoch=0)
    sizes = [v.shape[-1] for v in views]
    assert sizes == ([32, 32, 36] if augmentation == "infomin_jigsaw" else [32, 32, 32])
    assert all(v.shape[:2] == (4, 3) and torch.isfinite(v).all() for v in views)
    again, _, _ = dm.to_views(batch, epoch=0)
    other, _, _ = dm.to_views(batch, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    assert not torch.equal(views[0], other[0])


def test_cld_train_runs_with_decoder_torchvision(compose_train, jpeg_root: Path) -> None:
    from cld_lightning.app.train import train

    cfg = compose_train(
        "data=imagefolder",
        f"data.root={jpeg_root}",
        "data.image_size=32",
        "data.decoder=torchvision",
        "data.augment_on=device",
        "data.augmentation=mocov2",
        "data.batch_size=4",
        "method=moco",
        "method.queue_size=16",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=0",
        "logger=none",
        *FAST_TRAIN,
    )
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


def test_bad_decoder_options_name_the_keys(tmp_path: Path, jpeg_root: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="data.decoder must be one of"):
        SSLDataModule(dataset="imagefolder", root=tmp_path, decoder="nvjpeg")
    with pytest.raises(ValueError, match="data.decoder=torchvision.*data.augment_on=loader"):
        SSLDataModule(dataset="imagefolder", root=tmp_path, decoder="torchvision")
    assert_jigsaw_needs_dali(tmp_path)
    synthetic.write_fake_cifar(tmp_path, "cifar10", 16, 8)
    with pytest.raises(ValueError, match="data.decoder=torchvision.*data.decoder=pil"):
        SSLDataModule(
            dataset="cifar10",
            root=tmp_path,
            decoder="torchvision",
            augment_on="device",
            download=False,
        ).setup("fit")
    with pytest.raises(ValueError, match="data.cache_images=false"):
        _tv_dm(jpeg_root, cache_images=True)
    # DALI: not importable, then importable but no CUDA
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ValueError, match="data.decoder=dali needs NVIDIA DALI.*pip install"):
        SSLDataModule(dataset="imagefolder", root=tmp_path, decoder="dali", augment_on="device")
    monkeypatch.setitem(sys.modules, "nvidia", types.ModuleType("nvidia"))
    monkeypatch.setitem(sys.modules, "nvidia.dali", types.ModuleType("nvidia.dali"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="data.decoder=dali needs a CUDA GPU"):
        SSLDataModule(dataset="imagefolder", root=tmp_path, decoder="dali", augment_on="device")
    with pytest.raises(ValueError, match="data.decoder=dali.*data.augment_on=loader"):
        SSLDataModule(dataset="imagefolder", root=tmp_path, decoder="dali")


def test_dali_file_order_and_shard_length() -> None:
    a, b = file_order(100, 0), file_order(100, 0)
    assert (a == b).all() and sorted(a.tolist()) == list(range(100))
    assert not (a == file_order(100, 1)).all() and not (a == range(100)).all()
    assert shard_batches(1000, 64, 1) == 15 and shard_batches(1000, 64, 4) == 3
    assert shard_batches(10, 64, 1) == 0


def test_augment_on_device_with_pil_handles_images_of_different_sizes(jpeg_root: Path) -> None:
    """decoder=pil + augment_on=device on an uncached ImageFolder whose images differ in size:
    the loader yields lists of uint8 images and the crops are taken per image."""
    dm = _tv_dm(jpeg_root, decoder="pil")
    batch = next(iter(dm.train_dataloader()))
    images = batch[0]
    assert isinstance(images, list) and all(im.dtype == torch.uint8 for im in images)
    sizes = {tuple(dm.train_dataset[i][0].shape) for i in range(len(dm.train_dataset))}
    assert len(sizes) == 3  # the folder holds three image sizes
    views, _, _ = dm.to_views(batch)
    assert len(views) == 2 and all(v.shape == (4, 3, 32, 32) for v in views)
    # the same batch decoded on the device from the files gives the same views (same seed)
    tv = _tv_dm(jpeg_root)
    enc = tv.train_dataset
    tv_batch = collate_encoded([enc[int(i)] for i in batch[2]])
    tv_views, _, _ = tv.to_views(tv_batch)
    for a, b in zip(views, tv_views, strict=True):
        assert (a - b).abs().mean() < 0.05


def test_cmyk_jpegs_are_reencoded_to_rgb(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 12), (10, 200, 30, 0)).save(path, format="JPEG", quality=95)
    rgb = tmp_path / "rgb.jpg"
    Image.new("RGB", (20, 12), (10, 200, 30)).save(rgb, format="JPEG", quality=95)
    assert jpeg_components(path.read_bytes()) == 4 and jpeg_components(rgb.read_bytes()) == 3
    ds = EncodedDataset(FileImages([str(path), str(rgb)], [0, 1]))
    data = ds[0][0]
    assert jpeg_components(bytes(data.tolist())) == 3
    img = decode_jpegs(EncodedBatch([data], [str(path)]), "cpu")[0]
    ref = decode_image(path)
    assert img.shape == (3, 12, 20) and (img.int() - ref.int()).abs().max() <= 8


@pytest.mark.parametrize("aug", ["mocov2_erasing", "byol"])
def test_finish_is_the_tail_of_the_batched_view(aug: str) -> None:
    """Same crop boxes + same generator state: ``DecodedMultiViewAugment.finish`` after the crop
    equals ``BatchMultiViewAugment.view`` (guards the copied tail of the recipe)."""
    x = (torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    ref_aug = BatchMultiViewAugment(aug, 2, 16, 3, [0.5] * 3, [0.25] * 3)
    dec_aug = DecodedMultiViewAugment(aug, 2, 16, 3, [0.5] * 3, [0.25] * 3)
    for recipe in view_recipes(aug, 3):
        ref = ref_aug.view(x, recipe, torch.Generator().manual_seed(7))
        gen = torch.Generator().manual_seed(7)
        boxes = sample_crop_boxes(6, 24, 24, ref_aug.scale, ref_aug.ratio, gen)
        crops = resized_crop(x.float().div_(255.0), boxes, 16).clamp_(0.0, 1.0)
        torch.testing.assert_close(dec_aug.finish(crops, recipe, gen), ref)
