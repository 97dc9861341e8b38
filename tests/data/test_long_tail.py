"""Long-tail profile, subset selection, shot groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cld_lightning.data import (
    SSLDataModule,
    class_counts,
    long_tail_counts,
    long_tail_indices,
)
from cld_lightning.data.synthetic import write_fake_cifar, write_fake_filelist
from cld_lightning.longtail import shot_groups


def test_cifar10_lt_rho100_known_counts():
    # the published CIFAR-10-LT (rho = 100) class sizes, 12406 images in all
    counts = long_tail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


@pytest.mark.parametrize(
    "n_max,c,rho,total",
    # the published CIFAR-10-LT / CIFAR-100-LT training-set sizes (Cao et al. 2019, LDAM-DRW)
    [
        (5000, 10, 10, 20431),
        (5000, 10, 50, 13996),
        (500, 100, 100, 10847),
        (500, 100, 50, 12608),
        (500, 100, 10, 19573),
    ],
)
def test_counts_match_published_totals(n_max, c, rho, total):
    got = long_tail_counts(n_max, c, rho)
    assert len(got) == c and sum(got) == total
    assert got[0] == n_max and got[-1] == n_max // rho
    assert all(a >= b for a, b in zip(got, got[1:], strict=False))


def test_counts_small_hand_computed():
    # 7·0.4^(k/2): 7, 4.43, 2.8 -> floored
    assert long_tail_counts(7, 3, 2.5) == [7, 4, 2]
    # 9·(1/9)^(k/2): 9, 3, 1
    assert long_tail_counts(9, 3, 9) == [9, 3, 1]


def test_counts_rho_one_is_balanced_and_single_class():
    assert long_tail_counts(10, 4, 1) == [10, 10, 10, 10]
    assert long_tail_counts(10, 1, 50) == [10]
    assert long_tail_counts(10, 3, 1000) == [10, 1, 1]  # clamped to at least one image


@pytest.mark.parametrize("rho", [0.5, 0, -3, float("nan"), "abc"])
def test_imbalance_ratio_below_one_rejected(rho):
    with pytest.raises(ValueError, match="data.imbalance_ratio"):
        long_tail_counts(100, 10, rho)


def test_indices_match_counts_and_are_seed_deterministic():
    targets = torch.arange(10).repeat_interleave(50)  # 50 per class
    idx = long_tail_indices(targets, 10, seed=3)
    got = class_counts(targets[idx], 10).tolist()
    assert got == long_tail_counts(50, 10, 10)
    assert torch.equal(idx, long_tail_indices(targets, 10, seed=3))
    assert not torch.equal(idx, long_tail_indices(targets, 10, seed=4))
    assert len(set(idx.tolist())) == len(idx)
    assert torch.all(idx[1:] > idx[:-1])  # sorted


def test_indices_reject_unlabelled():
    with pytest.raises(ValueError, match="data.imbalance_ratio"):
        long_tail_indices(torch.tensor([0, 1, -1]), 2)


def test_shot_group_boundaries():
    counts = [101, 100, 500, 20, 19, 0, 57]
    g = shot_groups(counts)
    assert g == {"many": [0, 2], "medium": [1, 3, 6], "few": [4, 5]}
    assert shot_groups(torch.tensor(counts)) == g


def test_one_home_of_the_shot_split_and_data_does_not_import_eval():
    """``shot_groups`` lives in ``cld_lightning.longtail`` only (no root ``shots`` module, no
    re-export by ``data`` or ``eval``); ``longtail`` imports no other project package, no
    Lightning and no Hydra; importing ``cld_lightning.data`` loads nothing of ``eval``."""
    import importlib.util
    import subprocess
    import sys

    import cld_lightning.data as data
    import cld_lightning.eval as evaluation
    import cld_lightning.longtail as longtail

    assert shot_groups is longtail.shots.shot_groups
    assert importlib.util.find_spec("cld_lightning.shots") is None
    for package in (data, evaluation):  # not re-exported: the old path only warns (one release)
        assert "shot_groups" not in vars(package) and "shot_groups" not in package.__all__
    assert (longtail.MANY_SHOT_MIN, longtail.FEW_SHOT_MAX, longtail.PAPER_SCALE_MIN_HEAD) == (
        100,
        20,
        500,
    )
    code = (
        "import sys, cld_lightning; before = set(sys.modules); import cld_lightning.longtail; "
        "watched = ('cld_lightning', 'pytorch_lightning', 'lightning', 'hydra'); "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in watched)); "
        "import cld_lightning.data; "
        "print(sorted(m for m in sys.modules if m.startswith('cld_lightning.eval')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded_by_longtail, eval_loaded_by_data = out.stdout.strip().splitlines()
    parts = ("", ".accuracy", ".counts", ".shots")
    assert loaded_by_longtail == str([f"cld_lightning.longtail{p}" for p in parts])
    assert eval_loaded_by_data == "[]"
    counts = torch.randint(0, 300, (50,), generator=torch.Generator().manual_seed(0))
    lists = shot_groups(counts)
    masks = lists.masks()
    for name in ("many", "medium", "few"):
        assert lists[name] == torch.nonzero(masks[name]).flatten().tolist()
    assert sorted(sum(lists.values(), [])) == list(range(50))
    assert shot_groups(np.array([150, 40, 10]), "paper", 30, 15) == {
        "many": [0, 1],
        "medium": [],
        "few": [2],
    }
    with pytest.raises(ValueError, match=">= 0"):
        shot_groups([5, -1])


def test_datamodule_long_tail_cifar(tmp_path, make_dm):
    write_fake_cifar(tmp_path, "cifar10", n_train=400, n_test=50)  # 40 per class
    dm = make_dm("cifar10", tmp_path, imbalance_ratio=8, seed=1)
    expected = [40, 31, 25, 20, 15, 12, 10, 7, 6, 5]  # 40·(1/8)^(c/9), floored, by hand
    assert dm.class_counts.tolist() == expected
    assert dm.num_train_samples == 171
    assert class_counts(dm.train_targets, 10).tolist() == expected
    # test split stays balanced and complete
    assert class_counts(dm.test_dataset.targets, 10).tolist() == [5] * 10
    # 171 images, none over 100: thirds of the classes by count (the paper split would leave
    # many-shot empty)
    assert dm.shot_groups == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    assert dm.shot_groups.rule == "thirds"
    # same seed, same images; other seed, other images
    dm2 = make_dm("cifar10", tmp_path, imbalance_ratio=8, seed=1)
    dm3 = make_dm("cifar10", tmp_path, imbalance_ratio=8, seed=2)
    a = dm.memory_dataset[5][0]
    assert torch.equal(a, dm2.memory_dataset[5][0])
    assert not torch.equal(dm.train_dataset.source.indices, dm3.train_dataset.source.indices)


def test_datamodule_rejects_bad_ratio(tmp_path):
    with pytest.raises(ValueError, match="data.imbalance_ratio"):
        SSLDataModule("cifar10", root=str(tmp_path), imbalance_ratio=0.5)


def test_filelist_long_tail_counts_reported(tmp_path, make_dm, caplog):
    counts = [30, 12, 4]
    tr, te = write_fake_filelist(tmp_path, classes=3, train_counts=counts, test_per_class=2)
    with caplog.at_level("INFO", logger="cld_lightning.data.datamodule"):
        dm = make_dm("filelist", tmp_path, train_list=str(tr), test_list=str(te), image_size=32)
    assert dm.class_counts.tolist() == counts
    assert dm.num_classes == 3
    assert "[30, 12, 4]" in caplog.text
    assert dm.shot_groups == {"many": [0], "medium": [1], "few": [2]}  # thirds of 3 classes
    assert class_counts(dm.test_dataset.targets, 3).tolist() == [2, 2, 2]
    assert np.array_equal(dm.train_targets.numpy(), np.repeat([0, 1, 2], counts))
