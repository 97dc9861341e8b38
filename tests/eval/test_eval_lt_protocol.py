"""The long-tailed SSL protocol (SDCLR / BCL): full and few-shot probes on a balanced set."""

from __future__ import annotations

import pytest
import torch

from cld_lightning.eval import FAST_RECIPE
from cld_lightning.eval.linear_probe import linear_probe_result
from cld_lightning.eval.lt_protocol import few_shot_indices, long_tail_protocol


def _blobs(
    per_class: list[int], seed: int, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around one-hot centres (4 classes, 6-d), ``per_class`` images each."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    centres = 3.0 * torch.eye(len(per_class), 6)
    return centres[labels] + spread * torch.randn(len(labels), 6, generator=gen), labels


def test_few_shot_indices_per_class_nested_and_seeded() -> None:
    targets = torch.tensor([0] * 12 + [1] * 3 + [2] * 7 + [-1] * 4)
    idx = few_shot_indices(targets, 5, seed=0)
    assert torch.bincount(targets[idx], minlength=3).tolist() == [5, 3, 5]  # class 1 keeps all 3
    assert (targets[idx] >= 0).all() and idx.tolist() == sorted(idx.tolist())
    assert few_shot_indices(targets, 5, seed=0).tolist() == idx.tolist()
    small = few_shot_indices(targets, 2, seed=0)
    assert set(small.tolist()) <= set(idx.tolist())  # same split: 2-shot inside 5-shot
    assert few_shot_indices(targets, 5, seed=1).tolist() != idx.tolist()
    with pytest.raises(ValueError, match="shots"):
        few_shot_indices(targets, 0)


def test_protocol_figures_are_the_probes_on_the_splits() -> None:
    train_x, train_y = _blobs([30, 30, 30, 30], seed=0, spread=1.5)
    test_x, test_y = _blobs([20, 20, 20, 20], seed=1, spread=1.5)
    out = long_tail_protocol(train_x, train_y, test_x, test_y, 4, shots=(10, 2), num_splits=3)
    full = linear_probe_result(train_x, train_y, test_x, test_y, 4, FAST_RECIPE)
    assert out["lt_protocol/full_top1"] == pytest.approx(full.top1)
    assert out["lt_protocol/train_images"] == 120 and out["lt_protocol/num_splits"] == 3
    for shots in (10, 2):
        split_values = []
        for j in range(3):
            idx = few_shot_indices(train_y, shots, seed=j)
            res = linear_probe_result(train_x[idx], train_y[idx], test_x, test_y, 4, FAST_RECIPE)
            assert out[f"lt_protocol/{shots}shot_top1_split{j}"] == pytest.approx(res.top1)
            split_values.append(res.top1)
        values = torch.tensor(split_values, dtype=torch.float64)
        assert out[f"lt_protocol/{shots}shot_top1"] == pytest.approx(float(values.mean()))
        assert out[f"lt_protocol/{shots}shot_top1_std"] == pytest.approx(float(values.std()))
        assert out[f"lt_protocol/{shots}shot_images"] == 4 * shots
    assert "lt_protocol/full_many" not in out  # no pretraining counts given


def test_one_split_has_zero_std_and_unlabelled_images_are_left_out() -> None:
    train_x, train_y = _blobs([8, 8, 8, 8], seed=2)
    train_y = train_y.clone()
    train_y[:4] = -1
    test_x, test_y = _blobs([5, 5, 5, 5], seed=3)
    out = long_tail_protocol(train_x, train_y, test_x, test_y, 4, shots=(3,), num_splits=1)
    assert out["lt_protocol/train_images"] == 28
    assert out["lt_protocol/3shot_top1_std"] == 0.0
    assert out["lt_protocol/3shot_top1"] == out["lt_protocol/3shot_top1_split0"]


def test_many_medium_few_follow_the_pretraining_counts() -> None:
    # separable classes, but class 3's test images sit on class 0's centre: only "few" fails
    train_x, train_y = _blobs([20, 20, 20, 20], seed=4, spread=0.05)
    test_x, test_y = _blobs([5, 5, 5, 5], seed=5, spread=0.05)
    test_x[test_y == 3] = test_x[test_y == 0]
    counts = torch.tensor([400, 150, 60, 10])  # many > 100, few < 20 (the paper's thresholds)
    out = long_tail_protocol(
        train_x, train_y, test_x, test_y, 4, shots=(5,), num_splits=1, pretrain_counts=counts
    )
    assert out["lt_protocol/full_top1"] == 75.0
    assert out["lt_protocol/full_many"] == 100.0
    assert out["lt_protocol/full_medium"] == 100.0
    assert out["lt_protocol/full_few"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"num_splits": 0}, "num_splits"), ({"shots": (5, 0)}, "shots")]
)
def test_bad_arguments_named(kwargs, match: str) -> None:
    x, y = _blobs([4, 4, 4, 4], seed=6)
    with pytest.raises(ValueError, match=match):
        long_tail_protocol(x, y, x, y, 4, **kwargs)
