"""``data.decoder=dali``: NVIDIA DALI reads the training files, decodes them on the GPU (nvJPEG,
``device="mixed"``) and takes every view's RandomResizedCrop there (``fn.random_resized_crop``,
bilinear with antialiasing, same area / aspect ranges as the CPU recipe); the rest of each view
(flip, jitter, grayscale, blur, solarize, normalise, erasing) is the torch code of
:class:`~.gpu_decode.DecodedMultiViewAugment`, run in ``on_after_batch_transfer`` as for
``decoder=torchvision``.

DALI is imported lazily (``pip install nvidia-dali-cuda130``, extra ``cld-lightning[dali]``); it
needs a CUDA GPU. Differences from the other paths, by design: the crop boxes come from DALI's own
random generator (seeded from ``data.seed`` and the rank), so a resumed run does not replay the
same crops; the file order is a seeded permutation, reshuffled by DALI after every epoch
(``shuffle_after_epoch``); each rank reads its own shard; the last partial batch is dropped.
Only the pretraining loader uses DALI; the kNN loaders keep PIL.

Written against the DALI documentation (readers.file, decoders.image, random_resized_crop,
plugin.pytorch.DALIGenericIterator); run on a GPU with ``scripts/gpu_throughput.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

DALI_PACKAGE = "nvidia-dali-cuda130"


def require_dali() -> None:
    """Raise ``ValueError`` naming ``data.decoder`` when DALI or a CUDA device is missing."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise ValueError(
            f"data.decoder=dali needs NVIDIA DALI, which is not importable ({e}); install it with "
            f"`pip install {DALI_PACKAGE}` (or the cld-lightning[dali] extra), or use "
            "data.decoder=torchvision (GPU decoding with torchvision.io) or data.decoder=pil"
        ) from e
    if not torch.cuda.is_available():
        raise ValueError(
            "data.decoder=dali needs a CUDA GPU (DALI decodes with nvJPEG); on this machine use "
            "data.decoder=pil, or data.decoder=torchvision with data.augment_on=device"
        )


def file_order(num_files: int, seed: int) -> np.ndarray:
    """The seeded permutation the files are handed to DALI in (DALI only reshuffles *after* an
    epoch; an ImageFolder listed class by class would give one-class batches in epoch 0)."""
    return np.random.default_rng([seed, 13]).permutation(num_files)


def shard_batches(num_files: int, batch_size: int, num_shards: int) -> int:
    """Batches per epoch on one rank: DALI splits the files into ``num_shards`` contiguous shards
    of ``floor``/``ceil`` size; the last partial batch is dropped, so count the smallest shard."""
    return (num_files // num_shards) // batch_size


class DaliCrops:
    """One batch's views from DALI: ``uint8 [B, C, S, S]`` CUDA tensors, one per view. A plain
    object, so Lightning's transfer leaves it alone (it is on the GPU already)."""

    def __init__(self, views: list[Tensor]) -> None:
        self.views = views

    def __len__(self) -> int:
        return int(self.views[0].shape[0])


def _view_pipeline(
    files: list[str],
    labels: list[int],
    batch_size: int,
    num_views: int,
    image_size: int,
    crop_min_scale: float,
    channels: int,
    seed: int,
    shard_id: int,
    num_shards: int,
    device_id: int,
    num_threads: int,
) -> Any:
    """The DALI pipeline of one rank: read (instance index as label), decode on the GPU
    ("mixed"), ``num_views`` RandomResizedCrops as CHW uint8."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=int(seed) * 1000 + int(shard_id) + 1,
    )
    def pipe():  # noqa: ANN202 (DALI DataNodes)
        jpegs, index = fn.readers.file(
            files=files,
            labels=labels,
            name="Reader",
            shuffle_after_epoch=True,
            shard_id=shard_id,
            num_shards=num_shards,
        )
        images = fn.decoders.image(
            jpegs, device="mixed", output_type=types.GRAY if channels == 1 else types.RGB
        )
        views = []
        for _ in range(num_views):
            crop = fn.random_resized_crop(
                images,
                size=[image_size, image_size],
                random_area=[float(crop_min_scale), 1.0],
                random_aspect_ratio=[3.0 / 4.0, 4.0 / 3.0],
                num_attempts=10,
                antialias=True,
            )
            views.append(fn.transpose(crop, perm=[2, 0, 1]))  # HWC -> CHW
        return (*views, index)

    return pipe()


class DaliTrainLoader:
    """Iterable of ``(DaliCrops, target [B], index [B])`` over ``paths`` for one rank."""

    def __init__(
        self,
        paths: Sequence[str],
        targets: Tensor,
        batch_size: int,
        num_views: int,
        image_size: int,
        crop_min_scale: float,
        channels: int = 3,
        seed: int = 0,
        shard_id: int = 0,
        num_shards: int = 1,
        device_id: int = 0,
        num_threads: int = 4,
    ) -> None:
        require_dali()
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        order = file_order(len(paths), seed)
        files = [str(paths[i]) for i in order]
        labels = [int(i) for i in order]  # the "label" DALI carries is the instance index
        self.targets = targets.long()
        self.num_views = num_views
        self._len = shard_batches(len(files), batch_size, num_shards)
        if self._len == 0:
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {len(files) // num_shards} "
                "files of one rank's DALI shard; lower data.batch_size"
            )

        pipeline = _view_pipeline(  # the iterator builds it
            files,
            labels,
            batch_size,
            num_views,
            image_size,
            crop_min_scale,
            channels,
            seed,
            shard_id,
            num_shards,
            device_id,
            num_threads,
        )
        self._names = [f"view{v}" for v in range(num_views)] + ["index"]
        self._iter = DALIGenericIterator(
            [pipeline],
            self._names,
            reader_name="Reader",
            last_batch_policy=LastBatchPolicy.DROP,
            auto_reset=True,
        )

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[DaliCrops, Tensor, Tensor]]:
        for out in self._iter:
            d = out[0]
            index = d["index"].reshape(-1).long().cpu()
            # DALI reuses its output buffers on the next iteration: clone the views
            views = [d[name].clone() for name in self._names[:-1]]
            yield DaliCrops(views), self.targets[index], index
