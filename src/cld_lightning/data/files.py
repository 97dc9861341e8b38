"""Turn a list of image files into a source: corrupt-file handling and optional in-memory cache.

Corrupt images, what is practical:

* ``skip_corrupt=False`` (default): nothing is checked at setup (checking 1.28M ImageNet files would
  cost minutes); a file that fails to decode raises :class:`CorruptImageError` naming it when it is
  read (in a worker, the error is re-raised in the main process with the file name).
* ``skip_corrupt=True``: every file is checked once at setup with PIL ``verify`` (header + PNG CRCs,
  no full decode: about 0.1 ms a file locally), bad ones are dropped and counted in a warning.
* ``cache=True`` (small sets such as Kitchen-HC): every image is fully decoded at setup, so a
  corrupt file is reported (or, with ``skip_corrupt``, skipped and counted) there.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from .errors import CorruptImageError
from .sources import FileImages, ImageSource, TensorImages, decode_image, verify_image

if TYPE_CHECKING:
    from .spec import DataOptions, SplitData

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _warn_skipped(what: str, bad: list[str], total: int) -> None:
    shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
    msg = f"{what}: skipped {len(bad)} corrupt image(s) of {total}: {shown}"
    log.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def file_source(
    paths: Sequence[str],
    targets: Sequence[int],
    what: str,
    channels: int = 3,
    size: int | None = None,
    cache: bool = False,
    skip_corrupt: bool = False,
) -> ImageSource:
    """A :class:`FileImages` (or, with ``cache``, a :class:`TensorImages`) over ``paths``."""
    paths, targets = list(paths), [int(t) for t in targets]
    total = len(paths)
    bad: list[str] = []
    if skip_corrupt and not cache:
        keep = [i for i, p in enumerate(paths) if verify_image(p)]
        bad = [paths[i] for i in sorted(set(range(total)) - set(keep))]
        paths, targets = [paths[i] for i in keep], [targets[i] for i in keep]
    if cache:
        imgs, ys = [], []
        for p, y in zip(paths, targets, strict=True):
            try:
                imgs.append(decode_image(p, channels, size))
                ys.append(y)
            except CorruptImageError:
                if not skip_corrupt:
                    raise
                bad.append(p)
        if bad:
            _warn_skipped(what, bad, total)
        if not imgs:
            raise ValueError(f"{what}: no readable images")
        shapes = {tuple(x.shape) for x in imgs}
        if len(shapes) > 1:
            raise ValueError(f"{what}: cannot cache images of sizes {sorted(shapes)[:3]}")
        return TensorImages(torch.stack(imgs), ys)
    if bad:
        _warn_skipped(what, bad, total)
    if not paths:
        raise ValueError(f"{what}: no readable images")
    return FileImages(paths, targets, channels, size)


def file_split(
    opts: DataOptions,
    train: tuple[list, list],
    test: tuple[list, list],
    descriptions: tuple[str, str],
    num_classes: int,
    class_names: list[str] | None = None,
) -> SplitData:
    """``SplitData`` of two file lists (ImageFolder, file-list data sets): decoding options,
    channel count, size and ImageNet normalisation (0.5 for grayscale) from ``opts``."""
    from .spec import SplitData
    from .transforms import IMAGENET_MEAN, IMAGENET_STD

    channels = opts.in_channels or 3
    size = opts.image_size or 224
    cache = bool(opts.cache_images)
    decode_size = size if cache else None
    kw = dict(channels=channels, size=decode_size, cache=cache, skip_corrupt=opts.skip_corrupt)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
    extra = {"class_names": list(class_names)} if class_names is not None else {}
    return SplitData(
        train=file_source(train[0], train[1], descriptions[0], **kw),
        test=file_source(test[0], test[1], descriptions[1], **kw),
        num_classes=num_classes,
        in_channels=channels,
        native_size=decode_size,
        default_image_size=size,
        mean=mean,
        std=std,
        **extra,
    )
