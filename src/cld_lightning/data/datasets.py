"""Torch datasets over an :class:`~.sources.ImageSource`: multi-view for pretraining, one view for kNN.

Per-sample transforms run with one torch thread: on 32x32 images intra-op threading only adds
synchronisation (measured 10-15x slower with 2 threads on a busy 2-core machine). DataLoader
workers already run single-threaded; with ``num_workers=0`` the main process's thread count is
lowered to 1 around each transform and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.utils.data import Dataset

from .sources import ImageSource


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``, restoring the previous count."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class MultiViewDataset(Dataset):
    """Yields ``(views, target, index)``: ``views`` a list of tensors, ``index`` in ``[0, len)``."""

    def __init__(
        self, source: ImageSource, transform: Callable[[torch.Tensor], list[torch.Tensor]]
    ) -> None:
        self.source = source
        self.transform = transform
        self.targets = source.targets

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int, int]:
        with single_thread():
            views = self.transform(self.source.get_image(index))
        return views, int(self.targets[index]), int(index)


class EvalDataset(Dataset):
    """Yields ``(image, target, index)`` with a single (test) transform."""

    #: the transform is deterministic: :class:`~cld_lightning.app.resume.SeededDataset` skips seeding
    draws_random = False

    def __init__(self, source: ImageSource, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.source = source
        self.transform = transform
        self.targets = source.targets

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        with single_thread():
            img = self.transform(self.source.get_image(index))
        return img, int(self.targets[index]), int(index)
