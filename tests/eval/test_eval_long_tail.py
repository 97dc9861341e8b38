"""shot_accuracy on a hand-built example, group boundaries and NaN for empty groups."""

from __future__ import annotations

import math

import pytest
import torch

from cld_lightning.eval import shot_accuracy
from cld_lightning.eval.long_tail import shot_groups


def test_group_boundaries():
    groups = shot_groups([101, 100, 20, 19, 500, 0])
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
    result = shot_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), [500, 50])
    assert result["many"] == pytest.approx(50.0)
    assert result["medium"] == pytest.approx(100.0)
    assert math.isnan(result["few"])


def test_group_without_test_samples_is_nan():
    # class 1 is few-shot in training but absent from the test set
    result = shot_accuracy(torch.tensor([0, 0]), torch.tensor([0, 0]), [500, 3])
    assert result["many"] == 100.0 and math.isnan(result["few"])


def test_bad_input():
    with pytest.raises(ValueError, match="target"):
        shot_accuracy(torch.tensor([0, 1]), torch.tensor([0, 2]), [10, 10])
    with pytest.raises(ValueError, match="pred"):
        shot_accuracy(torch.tensor([0]), torch.tensor([0, 1]), [10, 10])
    with pytest.raises(ValueError, match="train_class_counts"):
        shot_accuracy(torch.tensor([0]), torch.tensor([0]), [[10, 10]])


def test_is_long_tailed_ratio_boundary():
    from cld_lightning.eval.long_tail import LONG_TAIL_MIN_RATIO, is_long_tailed

    assert LONG_TAIL_MIN_RATIO == 3
    assert not is_long_tailed([300, 100])  # exactly 3x: not long-tailed
    assert is_long_tailed([301, 100])
    assert is_long_tailed(torch.tensor([5000, 2997, 50]))  # CIFAR-10-LT, ρ = 100
    assert not is_long_tailed([1300, 732])  # ImageNet-like mild imbalance (ρ ≈ 1.8)
    assert is_long_tailed([4, 0]) and not is_long_tailed([3, 0])  # an empty class counts as 1
    assert not is_long_tailed([])
    assert is_long_tailed([150, 100], min_ratio=1.4)
