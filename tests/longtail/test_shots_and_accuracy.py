"""shot_accuracy on a hand-built example, group boundaries, NaN for empty groups and the
shot-group rule (paper thresholds where meaningful, else thirds of the classes by count)."""

from __future__ import annotations

import math

import pytest
import torch

from cld_lightning.longtail import (
    LONG_TAIL_MIN_RATIO,
    is_long_tailed,
    long_tail_counts,
    paper_rule_applies,
    shot_accuracy,
    shot_groups,
)


def test_group_boundaries():
    groups = shot_groups([101, 100, 20, 19, 500, 0]).masks()
    assert groups["many"].tolist() == [True, False, False, False, True, False]
    assert groups["medium"].tolist() == [False, True, True, False, False, False]
    assert groups["few"].tolist() == [False, False, False, True, False, True]


def test_hand_computed_example():
    counts = [200, 101, 100, 20, 19, 5]  # many {0, 1}, medium {2, 3}, few {4, 5}
    # (class, number of test samples, number correct)
    spec = [(0, 4, 4), (1, 2, 1), (2, 5, 1), (3, 5, 4), (4, 2, 0), (5, 10, 10)]
    target, pred = [], []
    for cls, n, right in spec:
        target += [cls] * n
        pred += [cls] * right + [(cls + 1) % 6] * (n - right)
    result = shot_accuracy(torch.tensor(pred), torch.tensor(target), counts)
    assert result["many"] == pytest.approx((100 + 50) / 2)
    assert result["medium"] == pytest.approx((20 + 80) / 2)
    assert result["few"] == pytest.approx((0 + 100) / 2)
    assert result["overall"] == pytest.approx(100 * 20 / 28)
    # scores ([N, C]) are reduced by argmax
    scores = torch.nn.functional.one_hot(torch.tensor(pred), 6).float()
    assert shot_accuracy(scores, torch.tensor(target), counts) == result


def test_empty_group_is_nan():
    pred, target = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])
    result = shot_accuracy(pred, target, [500, 50], rule="paper")
    assert result["many"] == pytest.approx(50.0)
    assert result["medium"] == pytest.approx(100.0)
    assert math.isnan(result["few"])
    # auto: one class a group under the thresholds -> thirds: head class many, tail class few
    result = shot_accuracy(pred, target, [500, 50])
    assert result["many"] == pytest.approx(50.0) and result["few"] == pytest.approx(100.0)
    assert math.isnan(result["medium"])


def test_group_without_test_samples_is_nan():
    # class 1 is few-shot in training but absent from the test set
    result = shot_accuracy(torch.tensor([0, 0]), torch.tensor([0, 0]), [500, 3], rule="paper")
    assert result["many"] == 100.0 and math.isnan(result["few"])


def test_bad_input():
    with pytest.raises(ValueError, match="target"):
        shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 2]), [10, 10])
    with pytest.raises(ValueError, match="pred"):
        shot_accuracy(torch.tensor([0]), torch.tensor([0, 1]), [10, 10])
    with pytest.raises(ValueError, match="train_class_counts"):
        shot_accuracy(torch.tensor([0]), torch.tensor([0]), [[10, 10]])


def test_is_long_tailed_ratio_boundary():
    assert LONG_TAIL_MIN_RATIO == 3
    assert not is_long_tailed([300, 100])  # exactly 3x: not long-tailed
    assert is_long_tailed([301, 100])
    assert is_long_tailed(torch.tensor([5000, 2997, 50]))  # CIFAR-10-LT, ρ = 100
    assert not is_long_tailed([1300, 732])  # ImageNet-like mild imbalance (ρ ≈ 1.8)
    assert is_long_tailed([4, 0]) and not is_long_tailed([3, 0])  # an empty class counts as 1
    assert not is_long_tailed([])
    assert is_long_tailed([150, 100], min_ratio=1.4)


# ----------------------------------------------------------------- the shot-group rule
def test_fashion_mnist_and_cifar10_lt_rho100_keep_the_paper_split():
    """n_c = int(n_max * 0.01 ** (c / 9)): no class under 20 images, so the paper split has no
    few-shot group; at benchmark scale (n_max >= 500) it is kept, as in the literature."""
    fmnist = long_tail_counts(6000, 10, 100)
    assert fmnist == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    cifar10 = long_tail_counts(5000, 10, 100)
    for counts in (fmnist, cifar10):
        groups = shot_groups(counts)
        assert groups.rule == "paper"
        assert groups == {"many": list(range(8)), "medium": [8, 9], "few": []}
        assert paper_rule_applies(counts)
    # CIFAR-100-LT: every group filled at rho 100; no few-shot class at rho 10
    assert shot_groups(long_tail_counts(500, 100, 100)).sizes() == {
        "many": 35,
        "medium": 35,
        "few": 30,
    }
    rho10 = shot_groups(long_tail_counts(500, 100, 10))
    assert rho10.rule == "paper" and rho10.sizes() == {"many": 69, "medium": 31, "few": 0}


def test_1000_image_sets_get_three_groups():
    # Fashion-MNIST-LT rho 10 scaled to 1,000 images: 4 many, 6 medium, no few-shot class under
    # the thresholds and a head of 250 < 500 images -> thirds, every group >= 2 classes
    counts = [250, 190, 146, 113, 88, 68, 52, 40, 31, 22]
    assert sum(counts) == 1000
    groups = shot_groups(counts)
    assert groups.rule == "thirds"
    assert groups == {"many": [0, 1, 2], "medium": [3, 4, 5, 6], "few": [7, 8, 9]}
    assert shot_groups(counts, rule="paper").sizes() == {"many": 4, "medium": 6, "few": 0}
    # rho 100 at 1,000 images: the thresholds give 3 / 3 / 4 classes -> kept
    small = long_tail_counts(403, 10, 100)
    assert small == [403, 241, 144, 86, 52, 31, 18, 11, 6, 4] and sum(small) == 996
    assert shot_groups(small).rule == "paper"
    assert shot_groups(small) == {"many": [0, 1, 2], "medium": [3, 4, 5], "few": [6, 7, 8, 9]}
    # 100 classes, 967 images (46 ... 0.46 -> at least 1): no class over 100 -> thirds; the
    # ties (many classes of 1 or 2 images) stay together: many >= 10 images, few <= 2
    hundred = long_tail_counts(46, 100, 100)
    groups = shot_groups(hundred)
    assert groups.rule == "thirds" and groups.sizes() == {"many": 33, "medium": 26, "few": 41}
    t = torch.tensor(hundred)
    assert int(t[groups["many"]].min()) == 10 and int(t[groups["medium"]].max()) == 9
    assert int(t[groups["medium"]].min()) == 3 and int(t[groups["few"]].max()) == 2


def test_thirds_rule_small_class_numbers_and_ties():
    assert shot_groups([30, 12, 4]) == {"many": [0], "medium": [1], "few": [2]}
    assert shot_groups([5, 50]) == {"many": [1], "medium": [], "few": [0]}
    assert shot_groups([7]) == {"many": [0], "medium": [], "few": []}
    assert shot_groups([]) == {"many": [], "medium": [], "few": []}
    # label order does not matter, equal counts share a group: 7 classes, 2 at each edge; the
    # second-smallest count (10) is shared by classes 0 and 2, both few-shot
    assert shot_groups([10, 40, 10, 40, 25, 5, 25], rule="thirds") == {
        "many": [1, 3],
        "medium": [4, 6],
        "few": [0, 2, 5],
    }
    assert shot_groups([9, 9, 9, 9], rule="thirds") == {
        "many": [0, 1, 2, 3],
        "medium": [],
        "few": [],
    }
    with pytest.raises(ValueError, match="rule"):
        shot_groups([1, 2], rule="quartiles")  # type: ignore[arg-type]


def test_paper_thresholds_with_an_empty_group_need_benchmark_scale():
    # 2 classes in each filled group, no few-shot class: kept from a 500-image head on
    assert shot_groups([500, 300, 60, 50]).rule == "paper"
    assert shot_groups([499, 300, 60, 50]).rule == "thirds"
    # a filled group of one class, or a single filled group, is never kept
    assert shot_groups([5000, 300, 60]).rule == "thirds"
    assert shot_groups([6000, 4645, 3596, 600]).rule == "thirds"
