"""Linear probe on precomputed features: learns a separable problem, cannot learn noise."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cld_lightning.eval import FAST_RECIPE, REFERENCE_RECIPE, LinearProbeConfig, linear_probe


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
