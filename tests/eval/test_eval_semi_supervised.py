"""Balanced label subsets (exact counts, determinism) and fine-tuning on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from cld_lightning.eval import balanced_label_subset, fine_tune
from cld_lightning.eval.semi_supervised import subset_size

COUNTS = [1000, 500, 37, 3, 250]


def long_tail_targets(seed=0):
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    targets = torch.cat([targets, torch.full((20,), -1)])  # unlabelled images
    return targets[torch.randperm(targets.numel(), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.1, [100, 50, 4, 1, 25]), (0.01, [10, 5, 1, 1, 3]), (1.0, COUNTS)],
)
def test_exact_per_class_counts(fraction, expected):
    targets = long_tail_targets()
    idx = balanced_label_subset(targets, fraction, seed=0)
    assert idx.dtype == torch.long
    assert torch.equal(idx, idx.unique())  # sorted, no duplicate
    assert (targets[idx] >= 0).all()
    assert torch.bincount(targets[idx], minlength=len(COUNTS)).tolist() == expected


def test_balanced_set_gives_equal_counts():
    targets = torch.arange(10).repeat(500)  # CIFAR-10-like: 500 per class
    idx = balanced_label_subset(targets, 0.01, seed=3)
    assert torch.bincount(targets[idx]).tolist() == [5] * 10


def test_round_half_up():
    assert subset_size(50, 0.01) == 1  # 0.5 rounds up
    assert subset_size(150, 0.01) == 2  # 1.5 rounds up (Python's round would give 2 too)
    assert subset_size(250, 0.01) == 3  # 2.5 -> 3 (Python's banker's round gives 2)
    assert subset_size(3, 0.01) == 1 and subset_size(0, 0.5) == 0


def test_deterministic_and_seed_dependent():
    targets = long_tail_targets()
    a = balanced_label_subset(targets, 0.1, seed=0)
    assert torch.equal(a, balanced_label_subset(targets, 0.1, seed=0))
    b = balanced_label_subset(targets, 0.1, seed=1)
    assert not torch.equal(a, b)
    assert torch.equal(torch.bincount(targets[a]), torch.bincount(targets[b]))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, "0.1"])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        balanced_label_subset(torch.arange(10), fraction, seed=0)


class MLPBackbone(nn.Module):
    feature_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def toy_images(n, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = 3.0 * torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(42))
    x = centres[y] + 0.3 * torch.randn(n, 3, 2, 2, generator=gen)
    return TensorDataset(x, y, torch.arange(n))


def test_fine_tune_learns_and_leaves_backbone_untouched():
    torch.manual_seed(0)
    train = toy_images(300, seed=1)
    targets = train.tensors[1]
    subset = Subset(train, balanced_label_subset(targets, 0.1, seed=0).tolist())
    test = toy_images(90, seed=2)
    backbone = MLPBackbone().train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    top1 = fine_tune(
        backbone,
        DataLoader(subset, batch_size=10, shuffle=True),
        DataLoader(test, batch_size=32),
        num_classes=3,
        epochs=15,
        backbone_lr=0.05,
        head_lr=0.1,
    )
    assert top1 > 90.0
    assert backbone.training
    for key, value in before.items():
        assert torch.equal(backbone.state_dict()[key], value), key


def test_fine_tune_needs_feature_dim():
    data = DataLoader(toy_images(12, 0), batch_size=4)
    with pytest.raises(ValueError, match="feature_dim"):
        fine_tune(nn.Flatten(), data, data, num_classes=3, epochs=1)
