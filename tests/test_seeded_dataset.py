"""SeededDataset: per-sample seeding that touches only the CPU generator and is skipped for
datasets that declare a deterministic transform."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from cld_lightning.app.resume import SeededDataset


class RandomItems(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return torch.rand(()).item(), float(np.random.rand()), random.random()


class FixedItems(RandomItems):
    draws_random = False

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return (float(index), 0.0, 0.0)


def test_items_depend_on_seed_epoch_index_only_and_global_rngs_are_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_cuda_seed(seed: int) -> None:  # torch.manual_seed would call this for every sample
        raise AssertionError("SeededDataset must seed the CPU generator only")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_cuda_seed)
    ds = SeededDataset(RandomItems(), seed=3)
    torch.default_generator.manual_seed(0)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = ds[(5, 2)]
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    torch.rand(10), np.random.rand(3), random.random()  # move the global streams on
    assert ds[(5, 2)] == first
    assert ds[(5, 3)] != first and ds[(4, 2)] != first
    assert SeededDataset(RandomItems(), seed=4)[(5, 2)] != first


def test_deterministic_dataset_is_read_without_seeding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_seed(*args: object) -> None:
        raise AssertionError("a draws_random=False dataset must not be seeded")

    monkeypatch.setattr(torch.random, "fork_rng", no_seed)
    ds = SeededDataset(FixedItems(), seed=0)
    assert [ds[(i, 1)] for i in range(3)] == [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (2.0, 0.0, 0.0)]
