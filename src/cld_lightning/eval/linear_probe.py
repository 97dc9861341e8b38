"""Linear probe: a linear classifier trained on frozen, precomputed backbone features.

Two recipes share one function:

- :data:`REFERENCE_RECIPE` — the ImageNet linear-evaluation schedule of CLD/MoCo: SGD, lr 30,
  momentum 0.9, weight decay 0, 100 epochs, lr x0.1 at epochs 60 and 80, mini-batches of 256.
- :data:`FAST_RECIPE` — full-batch L-BFGS with a small weight decay; converges in seconds on
  the CPU for CIFAR-sized feature sets.

Both operate on feature tensors extracted once (see :func:`cld_lightning.eval.extract_features`).
The reference protocol re-extracts features of freshly augmented images (RandomResizedCrop + flip)
every epoch; that augmentation-time re-extraction is **not** done here, so numbers from the
reference recipe on fixed features are close to, but not the same protocol as, the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.eval._checks import (
    as_feature_matrix,
    as_label_vector,
    check_positive_float,
    check_positive_int,
    check_same_length,
)


@dataclass(frozen=True)
class LinearProbeConfig:
    """Optimisation recipe of :func:`linear_probe`.

    ``optimizer="sgd"`` trains ``epochs`` passes of shuffled mini-batches with a step schedule
    (lr x ``gamma`` at each epoch in ``milestones``); ``optimizer="lbfgs"`` runs full-batch
    L-BFGS for at most ``epochs`` iterations and ignores ``lr``-schedule fields.
    """

    optimizer: str = "sgd"
    epochs: int = 100
    lr: float = 30.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: Sequence[int] = field(default=(60, 80))
    gamma: float = 0.1
    batch_size: int = 256
    normalize: bool = False
    seed: int = 0


REFERENCE_RECIPE = LinearProbeConfig()
FAST_RECIPE = LinearProbeConfig(
    optimizer="lbfgs", epochs=200, lr=1.0, weight_decay=1e-4, milestones=(), normalize=True
)


def _validate(config: LinearProbeConfig) -> None:
    if config.optimizer not in ("sgd", "lbfgs"):
        raise ValueError(f"config.optimizer must be 'sgd' or 'lbfgs', got {config.optimizer!r}")
    check_positive_int(config.epochs, "config.epochs")
    check_positive_float(config.lr, "config.lr")
    check_positive_int(config.batch_size, "config.batch_size")
    if config.weight_decay < 0:
        raise ValueError(f"config.weight_decay must be >= 0, got {config.weight_decay}")
    if not 0 <= config.momentum < 1:
        raise ValueError(f"config.momentum must be in [0, 1), got {config.momentum}")


def _train_sgd(
    clf: nn.Linear, x: Tensor, y: Tensor, config: LinearProbeConfig, gen: torch.Generator
) -> None:
    opt = torch.optim.SGD(
        clf.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=list(config.milestones), gamma=config.gamma
    )
    n = x.shape[0]
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen).to(x.device)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(clf(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()


def _train_lbfgs(clf: nn.Linear, x: Tensor, y: Tensor, config: LinearProbeConfig) -> None:
    opt = torch.optim.LBFGS(
        clf.parameters(), lr=config.lr, max_iter=config.epochs, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(clf(x), y)
        if config.weight_decay > 0:
            loss = loss + 0.5 * config.weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def train_linear_classifier(
    train_features: Tensor,
    train_labels: Tensor,
    num_classes: int,
    config: LinearProbeConfig = FAST_RECIPE,
) -> nn.Linear:
    """Fit ``nn.Linear(D, num_classes)`` on the features (inputs normalised per ``config``)."""
    _validate(config)
    x = train_features.detach().float()
    if config.normalize:
        x = F.normalize(x, dim=1)
    y = train_labels.to(x.device)
    gen = torch.Generator().manual_seed(config.seed)
    clf = nn.Linear(x.shape[1], num_classes).to(x.device)
    with torch.no_grad():
        bound = 1.0 / x.shape[1] ** 0.5
        clf.weight.copy_(
            torch.empty_like(clf.weight, device="cpu").uniform_(-bound, bound, generator=gen)
        )
        clf.bias.zero_()
    with torch.enable_grad():
        if config.optimizer == "sgd":
            _train_sgd(clf, x, y, config, gen)
        else:
            _train_lbfgs(clf, x, y, config)
    return clf


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    config: LinearProbeConfig = FAST_RECIPE,
) -> float:
    """Train a linear classifier on frozen features and return its test top-1 in percent.

    Args:
        train_features: ``[N_train, D]`` frozen backbone features.
        train_labels: ``[N_train]`` labels in ``[0, num_classes)``.
        test_features: ``[N_test, D]``.
        test_labels: ``[N_test]``.
        num_classes: number of classes.
        config: :data:`FAST_RECIPE` (default, L-BFGS) or :data:`REFERENCE_RECIPE` (SGD lr 30,
            100 epochs, steps at 60/80); see the module docstring for the protocol difference.
    """
    train_features = as_feature_matrix(train_features, "train_features")
    test_features = as_feature_matrix(test_features, "test_features")
    num_classes = check_positive_int(num_classes, "num_classes")
    train_labels = as_label_vector(train_labels, "train_labels", num_classes)
    test_labels = as_label_vector(test_labels, "test_labels", num_classes)
    check_same_length(train_features, train_labels, "train_features", "train_labels")
    check_same_length(test_features, test_labels, "test_features", "test_labels")
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise ValueError("train_features and test_features must both be non-empty")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            "train_features and test_features must have the same feature dimension, got "
            f"{train_features.shape[1]} and {test_features.shape[1]}"
        )
    clf = train_linear_classifier(train_features, train_labels, num_classes, config)
    with torch.no_grad():
        x = test_features.detach().float().to(clf.weight.device)
        if config.normalize:
            x = F.normalize(x, dim=1)
        pred = clf(x).argmax(dim=1).cpu()
    return 100.0 * float((pred == test_labels.cpu()).double().mean())
