"""Linear probe on precomputed features: learns a separable problem, cannot learn noise."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cld_lightning.eval import FAST_RECIPE, REFERENCE_RECIPE, LinearProbeConfig, linear_probe
from cld_lightning.eval.linear_probe import (
    class_log_prior,
    linear_baselines,
    linear_probe_result,
    logit_adjusted,
    standardize_features,
)


def blobs(seed, n_train=400, n_test=200, dim=16, num_classes=4):
    """Linearly separable Gaussian blobs (class means far apart in a random direction)."""
    gen = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(num_classes, dim, generator=gen)
    ytr = torch.arange(n_train) % num_classes
    yte = torch.arange(n_test) % num_classes
    xtr = centres[ytr] + 0.5 * torch.randn(n_train, dim, generator=gen)
    xte = centres[yte] + 0.5 * torch.randn(n_test, dim, generator=gen)
    return xtr, ytr, xte, yte, num_classes


def test_reference_recipe_values():
    assert REFERENCE_RECIPE.optimizer == "sgd"
    assert REFERENCE_RECIPE.lr == 30.0 and REFERENCE_RECIPE.momentum == 0.9
    assert REFERENCE_RECIPE.weight_decay == 0.0 and REFERENCE_RECIPE.epochs == 100
    assert tuple(REFERENCE_RECIPE.milestones) == (60, 80)


def test_fast_recipe_separable():
    assert linear_probe(*blobs(0), config=FAST_RECIPE) > 95.0


def test_reference_recipe_separable_short_schedule():
    config = dataclasses.replace(REFERENCE_RECIPE, epochs=10, milestones=(6, 8))
    assert linear_probe(*blobs(1), config=config) > 95.0


def test_noise_labels_stay_near_chance():
    xtr, _, xte, _, c = blobs(2)
    gen = torch.Generator().manual_seed(9)
    ytr = torch.randint(c, (xtr.shape[0],), generator=gen)
    yte = torch.randint(c, (xte.shape[0],), generator=gen)
    assert linear_probe(xtr, ytr, xte, yte, c) < 45.0


def test_deterministic_for_a_seed():
    data = blobs(3)
    config = LinearProbeConfig(epochs=3, lr=0.5, milestones=(2,))
    assert linear_probe(*data, config=config) == linear_probe(*data, config=config)


@pytest.mark.parametrize(
    ("override", "name"),
    [({"optimizer": "adam"}, "optimizer"), ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr")],
)
def test_bad_config(override, name):
    with pytest.raises(ValueError, match=name):
        linear_probe(*blobs(0), config=dataclasses.replace(FAST_RECIPE, **override))


def test_bad_input():
    xtr, ytr, xte, yte, c = blobs(0)
    with pytest.raises(ValueError, match="train_labels"):
        linear_probe(xtr, ytr[:-1], xte, yte, c)
    with pytest.raises(ValueError, match="test_labels"):
        linear_probe(xtr, ytr, xte, yte + 10, c)
    with pytest.raises(ValueError, match="feature dimension"):
        linear_probe(xtr, ytr, xte[:, :3], yte, c)


# --- class-balanced probe (post-hoc logit adjustment) ------------------------------------------


def skewed(seed=0, counts=(500, 500, 5), n_test=200, dim=8):
    """Hand-made long tail: class 2 (5 training images) overlaps head class 0 (500 images)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.zeros(3, dim)
    centres[0, 0], centres[1, 0] = 3.0, -3.0
    centres[2, 0], centres[2, 1] = 3.0, 1.5  # rare class: next to class 0, shifted on one axis
    ytr = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    yte = torch.arange(3 * n_test) % 3  # balanced test set
    xtr = centres[ytr] + torch.randn(len(ytr), dim, generator=gen)
    xte = centres[yte] + torch.randn(len(yte), dim, generator=gen)
    return xtr, ytr, xte, yte, 3


def test_balanced_probe_recovers_the_rare_class_the_plain_probe_never_predicts():
    from cld_lightning.eval import shot_accuracy

    xtr, ytr, xte, yte, c = skewed()
    res = linear_probe_result(xtr, ytr, xte, yte, c)
    rare = yte == 2
    assert float((res.pred[rare] == 2).float().mean()) == 0.0  # plain: 0 % of the rare class
    assert float((res.balanced_pred[rare] == 2).float().mean()) > 0.5
    assert res.balanced_top1 > res.top1 + 10.0
    assert res.train_class_counts.tolist() == [500, 500, 5]
    # the shot groups of the long-tail protocol: class 2 is few-shot (< 20 training images)
    plain = shot_accuracy(res.pred, yte, res.train_class_counts)
    balanced = shot_accuracy(res.balanced_pred, yte, res.train_class_counts)
    assert plain["few"] == 0.0 and balanced["few"] > 50.0
    # linear_probe(balanced=True) is the same figure
    assert linear_probe(xtr, ytr, xte, yte, c, balanced=True) == res.balanced_top1
    assert linear_probe(xtr, ytr, xte, yte, c) == res.top1


def test_balanced_equals_plain_on_a_balanced_training_set():
    res = linear_probe_result(*blobs(4))
    assert torch.equal(res.pred, res.balanced_pred) and res.top1 == res.balanced_top1


def test_tau_zero_is_the_plain_probe():
    res = linear_probe_result(*skewed(), tau=0.0)
    assert torch.equal(res.pred, res.balanced_pred)


def test_logit_adjustment_values_and_absent_class():
    log_prior = class_log_prior(torch.tensor([0, 0, 0, 1]), num_classes=3)
    assert torch.allclose(log_prior[:2], torch.tensor([0.75, 0.25]).log())
    assert log_prior[2] == float("-inf")
    logits = torch.tensor([[1.0, 0.0, 5.0]])
    adjusted = logit_adjusted(logits, log_prior, tau=1.0)
    expected = torch.tensor([1.0 - math.log(0.75), 0.0 - math.log(0.25)])
    assert torch.allclose(adjusted[0, :2], expected)
    assert adjusted[0, 2] == float("-inf")  # absent class: never predicted, not +inf
    with pytest.raises(ValueError, match="tau"):
        logit_adjusted(logits, log_prior, tau=-1.0)
    with pytest.raises(ValueError, match="tau"):
        linear_probe_result(*skewed(), tau=float("nan"))


def test_standardize_features_uses_training_statistics():
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    test = torch.tensor([[2.0, 6.0]])
    tr, te = standardize_features(train, test)
    assert torch.allclose(tr.mean(0), torch.zeros(2))
    assert torch.allclose(tr[:, 0].std(), torch.tensor(1.0))
    assert torch.allclose(te, torch.tensor([[0.0, 1.0]]))  # constant dimension: only centred


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 8)

    def features(self, x):
        return self.lin(x.flatten(1))


def _loaders(seed=5):
    from torch.utils.data import DataLoader, TensorDataset

    xtr, ytr, xte, yte, c = blobs(seed, n_train=80, n_test=40)
    mem = TensorDataset(xtr.view(-1, 1, 4, 4), ytr, torch.arange(len(ytr)))
    test = TensorDataset(xte.view(-1, 1, 4, 4), yte, torch.arange(len(yte)))
    return DataLoader(mem, batch_size=32), DataLoader(test, batch_size=32), c


def test_linear_baselines_keys_values_and_pixel_guard():
    from cld_lightning.eval.baselines import reinitialized_copy

    mem, test, c = _loaders()
    net = _TinyNet()
    out = linear_baselines(net, mem, test, c, seed=3, tau=1.0)
    assert set(out) == {
        "linear/pixel_top1",
        "linear/pixel_balanced_top1",
        "linear/random_init_top1",
        "linear/random_init_balanced_top1",
    }
    xtr, ytr, xte, yte, _ = blobs(5, n_train=80, n_test=40)
    sxtr, sxte = standardize_features(xtr, xte)
    assert out["linear/pixel_top1"] == linear_probe(sxtr, ytr, sxte, yte, c)
    fresh = reinitialized_copy(net, 3)
    with torch.no_grad():
        expected = linear_probe(fresh.features(xtr), ytr, fresh.features(xte), yte, c)
    assert out["linear/random_init_top1"] == pytest.approx(expected)
    skipped = linear_baselines(net, mem, test, c, seed=3, max_pixel_elements=10)
    assert set(skipped) == {"linear/random_init_top1"}  # no tau: no balanced keys
