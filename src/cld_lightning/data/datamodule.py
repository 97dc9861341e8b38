"""``SSLDataModule``: one LightningDataModule for every data set, long-tail and correlated variants.

Pretraining set, built once in ``setup``::

    train split --(imbalance_ratio | split_file)--> long-tailed subset
                --(max_train_samples)--> random subset
                --(copies / num_sources)--> near-duplicate instances

The kNN memory set is the labelled part of the pretraining set (for STL-10: the labelled train
split) with the test transform; the test split stays balanced and untouched (except
``max_test_samples``). Every random choice derives from ``seed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cld_lightning.longtail import (
    check_imbalance_ratio,
    class_counts,
    long_tail_indices,
    shot_groups,
)

from .batch_augment import BatchMultiViewAugment
from .correlated import CorrelatedImages, check_correlated_args
from .dali import DaliCrops
from .datasets import EvalDataset, MultiViewDataset
from .degenerate import check_emptied_classes, warn_one_class
from .errors import DataSizeError
from .gpu_decode import (
    DecodedMultiViewAugment,
    EncodedBatch,
    EncodedDataset,
    check_decoder,
    check_pre_cropped,
    collate_encoded,
    collate_image_list,
    decode_jpegs,
    file_paths,
)
from .registry import DATASETS, get_dataset
from .sources import ImageSource, SubsetImages
from .spec import DataOptions
from .split_file import check_split_file, read_split_file
from .transforms import AUGMENTATIONS, build_eval_transform, build_multiview_transform

log = logging.getLogger(__name__)
AUGMENT_ON = ("loader", "device", "gpu")


def raw_uint8(image: torch.Tensor) -> torch.Tensor:
    """The identity transform of ``augment_on=device`` training sets (uint8 ``[C, H, W]``)."""
    return image


def batch_seed(seed: int, epoch: int, index: torch.Tensor, rank: int) -> int:
    """Seed of one batch's augmentation: a function of the run seed, the epoch, the batch's sample
    indices and the process rank, so a resumed run (same data order) replays the same views."""
    idx = index.detach().cpu().long()
    words = [seed, epoch, rank, len(idx), int(idx[:1].sum()), int(idx.sum() % (2**31))]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] % (2**63))


def _check_int(key: str, value, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        extra = " or null" if optional else ""
        raise ValueError(f"data.{key} must be an integer >= {minimum}{extra}, got {value!r}")


def _random_subset(n: int, k: int, seed: int, stream: int) -> np.ndarray:
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.permutation(n)[:k])


def _check_args(spec: Any, a: dict[str, Any]) -> float | None:
    """Reject invalid :class:`SSLDataModule` arguments, naming the ``data.<key>``; returns the
    validated ``imbalance_ratio`` (a float, or None)."""
    if a["augmentation"] not in AUGMENTATIONS:
        raise ValueError(
            f"unknown data.augmentation={a['augmentation']!r}; valid: {', '.join(AUGMENTATIONS)}"
        )
    for key, minimum, optional in (
        ("batch_size", 1, False),
        ("val_batch_size", 1, True),
        ("num_workers", 0, False),
        ("num_views", 1, False),
        ("seed", 0, False),
        ("image_size", 8, True),
        ("crop_size", 8, True),
        ("max_train_samples", 1, True),
        ("subset_size", 1, True),
        ("max_test_samples", 1, True),
    ):
        _check_int(key, a[key], minimum, optional=optional)
    in_channels = a["in_channels"]
    if in_channels not in (None, 1, 3):
        raise ValueError(f"data.in_channels must be 1, 3 or null, got {in_channels!r}")
    if spec.in_channels is not None and in_channels not in (None, spec.in_channels):
        raise ValueError(
            f"data.in_channels={in_channels} but {a['dataset']} has {spec.in_channels} channel(s)"
        )
    if not 0 < float(a["crop_min_scale"]) <= 1:
        raise ValueError(f"data.crop_min_scale must be in (0, 1], got {a['crop_min_scale']!r}")
    _check_augment_on(a["augment_on"], a["augmentation"], a["decoder"])
    imbalance_ratio = a["imbalance_ratio"]
    if imbalance_ratio is not None:
        imbalance_ratio = check_imbalance_ratio(imbalance_ratio)
    check_correlated_args(a["copies"], a["num_sources"])
    if a["split_file"] is not None:
        if imbalance_ratio is not None:
            raise ValueError(
                "data.split_file and data.imbalance_ratio both choose the pretraining subset; "
                "set data.imbalance_ratio=null to use the split file"
            )
        check_split_file(a["split_file"])
    if a["subset_size"] is not None and a["max_train_samples"] not in (None, a["subset_size"]):
        raise ValueError(
            "data.subset_size is an alias of data.max_train_samples; set only one of them"
        )
    mean, std = a["mean"], a["std"]
    if mean is not None and std is not None and len(mean) != len(std):
        raise ValueError(f"data.mean and data.std differ in length: {mean} / {std}")
    return imbalance_ratio


def _check_augment_on(augment_on: str, augmentation: str, decoder: str) -> None:
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"data.augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
    if augment_on != "loader":
        from .batch_augment import view_recipes

        view_recipes(augmentation, 3)  # raises, naming the key, for recipes with no batch version
        if decoder == "dali":
            check_pre_cropped(augmentation)
    if augment_on == "gpu" and not torch.cuda.is_available():
        raise ValueError(
            "data.augment_on=gpu needs a CUDA device; use data.augment_on=device to augment "
            "batches on whatever device the model runs on (the CPU included)"
        )
    check_decoder(decoder, augment_on)


def _data_options(spec: Any, a: dict[str, Any]) -> DataOptions:
    """Where and how to load the files: the arguments, else the data set's own defaults."""
    d = spec.defaults

    def arg_or_default(key: str) -> Any:
        return a[key] if a[key] is not None else d.get(key)

    return DataOptions(
        root=Path(a["root"]).expanduser(),
        download=a["download"],
        image_size=arg_or_default("image_size"),
        in_channels=a["in_channels"],
        class_list=Path(a["class_list"]) if a["class_list"] else None,
        train_dir=arg_or_default("train_dir"),
        test_dir=arg_or_default("test_dir"),
        train_list=Path(a["train_list"]) if a["train_list"] else None,
        test_list=Path(a["test_list"]) if a["test_list"] else None,
        use_unlabeled=a["use_unlabeled"],
        cache_images=arg_or_default("cache_images"),
        skip_corrupt=a["skip_corrupt"],
    )


class SSLDataModule(pl.LightningDataModule):
    """Multi-view pretraining data + kNN validation loaders for one registered data set.

    After ``setup("fit")``: ``num_classes``, ``num_train_samples``, ``in_channels``, ``image_size``,
    ``train_targets`` (``[num_train_samples]``, -1 = unlabelled), ``class_counts`` (kNN memory set
    per class) and ``shot_groups`` (many/medium/few class lists).

    ``decoder`` (file data sets: ImageFolder, file lists): ``pil`` decodes in the loader workers;
    ``torchvision`` / ``dali`` decode the JPEG files on the model's device and need
    ``augment_on=device|gpu`` (see :mod:`.gpu_decode`, :mod:`.dali`).
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        root: str | Path = "data",
        batch_size: int = 256,
        num_workers: int = 2,
        num_views: int = 2,
        augmentation: str = "npid",
        seed: int = 0,
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        val_batch_size: int | None = None,
        image_size: int | None = None,
        crop_size: int | None = None,
        in_channels: int | None = None,
        crop_min_scale: float = 0.2,
        augment_on: str = "loader",
        decoder: str = "pil",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        download: bool = True,
        max_train_samples: int | None = None,
        subset_size: int | None = None,
        max_test_samples: int | None = None,
        imbalance_ratio: float | None = None,
        split_file: str | None = None,
        copies: int = 1,
        num_sources: int | None = None,
        class_list: str | None = None,
        train_dir: str | None = None,
        test_dir: str | None = None,
        train_list: str | None = None,
        test_list: str | None = None,
        use_unlabeled: bool = True,
        cache_images: bool | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__()
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.spec = get_dataset(dataset)
        imbalance_ratio = _check_args(self.spec, args)  # normalised (float), saved as such
        self.save_hyperparameters(logger=False)
        self._set_attributes({**args, "imbalance_ratio": imbalance_ratio})
        self._image_lists = False
        self._ready = False
        self.class_names: list[str] = []  # the data set's class names after setup ([] = none)
        self.train_dataset: MultiViewDataset | None = None
        self.memory_dataset: EvalDataset | None = None
        self.test_dataset: EvalDataset | None = None

    def _set_attributes(self, a: dict[str, Any]) -> None:
        """The checked constructor arguments as attributes and :class:`DataOptions`."""
        self.dataset_name = a["dataset"]
        self.root = Path(a["root"]).expanduser()
        self.batch_size = a["batch_size"]
        self.val_batch_size = a["val_batch_size"] or a["batch_size"]
        self.num_workers = a["num_workers"]
        self.num_views = a["num_views"]
        self.augmentation = a["augmentation"]
        self.augment_on = a["augment_on"]
        self.decoder = a["decoder"]
        self.batch_augment: BatchMultiViewAugment | None = None
        self.seed = a["seed"]
        self.drop_last = a["drop_last"]
        self.pin_memory = a["pin_memory"]
        self.persistent_workers = a["persistent_workers"]
        self.crop_min_scale = float(a["crop_min_scale"])
        self.crop_size = a["crop_size"]
        max_train, subset_size = a["max_train_samples"], a["subset_size"]
        self.max_train_samples = max_train if max_train is not None else subset_size
        self.max_test_samples = a["max_test_samples"]
        self.imbalance_ratio = a["imbalance_ratio"]
        self.split_file = a["split_file"]
        self.copies = a["copies"]
        self.num_sources = a["num_sources"]
        self._mean = tuple(a["mean"]) if a["mean"] is not None else None
        self._std = tuple(a["std"]) if a["std"] is not None else None
        self._image_size_arg = a["image_size"]
        self.options = _data_options(self.spec, a)

    # ---- static metadata (available before setup where the data set fixes it) ----
    def _meta(self, attr: str, static):
        if self._ready:
            return getattr(self, f"_{attr}")
        if static is not None:
            return static
        raise RuntimeError(f"{self.dataset_name}: {attr} is known after datamodule.setup('fit')")

    @property
    def num_classes(self) -> int:
        return self._meta("num_classes", self.spec.num_classes)

    @property
    def in_channels(self) -> int:
        static = self.spec.in_channels or self.options.in_channels
        return self._meta("in_channels", static)

    @property
    def image_size(self) -> int:
        return self._meta("image_size", self._image_size_arg or self.spec.image_size)

    @property
    def num_train_samples(self) -> int:
        return self._meta("num_train_samples", None)

    @property
    def train_targets(self) -> torch.Tensor:
        return self._meta("train_targets", None)

    @property
    def class_counts(self) -> torch.Tensor:
        return self._meta("class_counts", None)

    @property
    def shot_groups(self) -> dict[str, list[int]]:
        return shot_groups(self.class_counts)

    # ---- Lightning hooks ----
    def prepare_data(self) -> None:
        """Download (rank 0 only) when ``download`` is set and the files are missing."""
        if self.options.download and self.spec.download is not None:
            self.spec.download(self.options)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        data = self.spec.load(self.options)
        train, memory, test = self._splits(data)
        size = self.options.image_size or data.default_image_size
        mean = self._mean or tuple(data.mean)
        std = self._std or tuple(data.std)
        if len(mean) != data.in_channels or len(std) != data.in_channels:
            raise ValueError(
                f"data.mean/data.std need {data.in_channels} value(s) for {self.dataset_name}, "
                f"got {mean} / {std}"
            )
        if data.native_size == size:
            resize_to = None
        else:
            resize_to = size if size <= 64 else int(round(size / 0.875))
        # one recipe, two builders: per-sample (loader) and batched (augment_on=device|gpu)
        # training views: crop_size (null = the evaluation size), e.g. 24 px views of 28 px
        # images, scored at 28 px (a lower training than test resolution, cf. FixRes)
        self._crop_size = self.crop_size or size
        recipe = (self.augmentation, self.num_views, self._crop_size, data.in_channels, mean, std)
        self.train_transform = build_multiview_transform(*recipe, self.crop_min_scale)
        self.eval_transform = build_eval_transform(size, mean, std, resize_to)
        self._set_train_dataset(train, data, recipe)
        self._train_source = train
        self.memory_dataset = EvalDataset(memory, self.eval_transform)
        self.test_dataset = EvalDataset(test, self.eval_transform)

        self._num_classes = data.num_classes
        self._in_channels = data.in_channels
        self._image_size = size
        self._num_train_samples = len(train)
        self._train_targets = train.targets.clone()
        self._class_counts = class_counts(memory.targets, data.num_classes)
        warn_one_class(self.dataset_name, self._class_counts)
        self.class_names = data.class_names
        self.mean, self.std = mean, std
        self._ready = True
        self._log_summary(len(train), len(memory), len(test))

    def _splits(self, data: Any) -> tuple[ImageSource, ImageSource, ImageSource]:
        """``(pretraining set, kNN memory set, test set)`` as the module docstring draws them."""
        train: ImageSource = data.train
        if self.imbalance_ratio is not None:
            idx = long_tail_indices(
                train.targets, self.imbalance_ratio, self.seed, data.num_classes
            )
            train = SubsetImages(train, idx)
        if self.split_file is not None:  # a published subset (SDCLR / BCL CIFAR-LT splits)
            train = SubsetImages(train, read_split_file(self.split_file, len(train)))
        if self.max_train_samples is not None and self.max_train_samples < len(train):
            train = SubsetImages(
                train, _random_subset(len(train), self.max_train_samples, self.seed, 1)
            )
        check_emptied_classes(
            self.dataset_name,
            data.train.targets,
            train.targets,
            data.num_classes,
            {
                "data.imbalance_ratio": self.imbalance_ratio,
                "data.split_file": self.split_file,
                "data.max_train_samples": self.max_train_samples,
            },
            data.class_names,
        )
        if self.copies > 1 or self.num_sources is not None:
            train = CorrelatedImages(train, self.copies, self.num_sources, self.seed)
        test: ImageSource = data.test
        if self.max_test_samples is not None and self.max_test_samples < len(test):
            test = SubsetImages(
                test, _random_subset(len(test), self.max_test_samples, self.seed, 2)
            )
        labelled = torch.nonzero(train.targets >= 0).flatten()
        memory = train if len(labelled) == len(train) else SubsetImages(train, labelled)
        if len(memory) == 0:
            raise ValueError(f"{self.dataset_name}: the pretraining set has no labelled images")
        return train, memory, test

    def _set_train_dataset(self, train: ImageSource, data: Any, recipe: tuple) -> None:
        """Multi-view images from the loader, or (``augment_on=device|gpu``) uint8 images /
        encoded files with the batch augmentation that makes the views on the device
        (``recipe``: the leading arguments of both view builders)."""
        if self.augment_on == "loader":
            self.train_dataset = MultiViewDataset(train, self.train_transform)
            return
        # uint8 images; views are made per batch on the device (on_after_batch_transfer)
        # images of different sizes (encoded files, or an uncached ImageFolder / file list)
        # come as lists: each view's crop is taken per image, then the batched ops
        self._image_lists = self.decoder != "pil" or data.native_size is None
        augment_cls = DecodedMultiViewAugment if self._image_lists else BatchMultiViewAugment
        self.batch_augment = augment_cls(*recipe, self.crop_min_scale)
        if self.decoder == "pil":
            self.train_dataset = EvalDataset(train, raw_uint8)
        elif self.decoder == "torchvision":  # encoded files, decoded on the device
            self.train_dataset = EncodedDataset(train, self.dataset_name)
        else:  # dali: the loader is built in train_dataloader (needs the trainer's rank)
            self._train_paths = file_paths(train, self.dataset_name)
            self.train_dataset = EvalDataset(train, raw_uint8)

    def _log_summary(self, num_train: int, num_memory: int, num_test: int) -> None:
        groups = shot_groups(self._class_counts)
        log.info(
            "%s: %d pretraining instances, %d kNN memory, %d test; per-class counts %s; "
            "shot groups many/medium/few = %d/%d/%d classes",
            self.dataset_name,
            num_train,
            num_memory,
            num_test,
            self._class_counts.tolist(),
            len(groups["many"]),
            len(groups["medium"]),
            len(groups["few"]),
        )

    def to_views(self, batch: Any, epoch: int = 0, rank: int = 0) -> Any:
        """A training batch as ``(views, target, index)`` whatever ``augment_on`` is: with
        ``augment_on=device`` the uint8 images are augmented here, on their device, seeded by
        (seed, epoch, the batch's indices, rank); otherwise the batch is returned unchanged."""
        images, target, index = batch
        if self.batch_augment is None:
            return batch
        gen = torch.Generator().manual_seed(batch_seed(self.seed, epoch, index, rank))
        if isinstance(images, EncodedBatch):  # decoder=torchvision: decode on index's device
            decoded = decode_jpegs(images, index.device, self.batch_augment.in_channels)
            return self.batch_augment(decoded, gen), target, index
        if isinstance(images, DaliCrops):  # decoder=dali: crops already on the GPU
            crops = [v.float().div_(255.0) for v in images.views]
            return self.batch_augment.from_crops(crops, gen), target, index
        if isinstance(images, list) and self._image_lists:  # uint8 images of different sizes
            return self.batch_augment(images, gen), target, index
        if not isinstance(images, torch.Tensor):
            return batch
        return self.batch_augment(images, gen), target, index

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``augment_on=device``: turn a training batch of uint8 images (or, with
        ``data.decoder=torchvision|dali``, encoded files / DALI crops) into augmented views."""
        trainer = getattr(self, "trainer", None)
        if self.batch_augment is None or trainer is None or not trainer.training:
            return batch
        return self.to_views(batch, trainer.current_epoch, trainer.global_rank)

    # ---- loaders ----
    def _loader(self, ds: Dataset, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=train,
            drop_last=self.drop_last if train else False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self._collate(ds, train),
        )

    def _collate(self, ds: Dataset, train: bool):
        if isinstance(ds, EncodedDataset):
            return collate_encoded
        if train and self._image_lists and ds is self.train_dataset:
            return collate_image_list
        return None

    def _dali_loader(self):
        from .dali import DaliTrainLoader

        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        device = torch.cuda.current_device()
        if trainer is not None and trainer.strategy.root_device.type == "cuda":
            device = trainer.strategy.root_device.index or 0
        return DaliTrainLoader(
            self._train_paths,
            self._train_targets,
            self.batch_size,
            self.num_views,
            self._crop_size,
            self.crop_min_scale,
            channels=self._in_channels,
            seed=self.seed,
            shard_id=rank,
            num_shards=world,
            device_id=device,
            num_threads=max(1, self.num_workers),
        )

    def _require_setup(self) -> None:
        if not self._ready:
            self.setup("fit")

    def instance_loader(self) -> DataLoader:
        """Every pretraining instance once, in index order, with the test transform (yields
        ``(image, target, index)``; e.g. NPID's ``bank_init=embeddings``)."""
        self._require_setup()
        return self._loader(
            EvalDataset(self._train_source, self.eval_transform), self.val_batch_size, train=False
        )

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        n = len(self.train_dataset)
        if self.drop_last and n < self.batch_size:
            raise DataSizeError(
                f"data.batch_size={self.batch_size} is larger than the {n} pretraining instances "
                "and data.drop_last=true would leave no batch; lower data.batch_size"
            )
        if self.decoder == "dali":
            return self._dali_loader()
        return self._loader(self.train_dataset, self.batch_size, train=True)

    def val_dataloader(self) -> list[DataLoader]:
        """``[memory (train split, test transform), test]``, each yielding (image, target, index)."""
        self._require_setup()
        return [
            self._loader(self.memory_dataset, self.val_batch_size, train=False),
            self._loader(self.test_dataset, self.val_batch_size, train=False),
        ]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def __repr__(self) -> str:
        return (
            f"SSLDataModule(dataset={self.dataset_name!r}, root={str(self.root)!r}, "
            f"augmentation={self.augmentation!r}, num_views={self.num_views}, "
            f"batch_size={self.batch_size})"
        )


def available_datasets() -> list[str]:
    return sorted(DATASETS)
