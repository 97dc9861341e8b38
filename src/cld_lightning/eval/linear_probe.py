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

Class-balanced probe (:func:`linear_probe_result`, ``balanced_top1``): **post-hoc logit
adjustment** (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021). The classifier is
trained once with the plain cross-entropy; at test time ``tau * log(prior_c)`` is subtracted from
each logit, ``prior_c = n_c / N`` the class frequency of the *training* labels. With ``tau = 1`` this
turns an estimate of ``p(y | x)`` under the skewed training prior into the prediction that is
optimal for the balanced (per-class mean) error. On a balanced training set the shift is the same
for every class, so the balanced predictions equal the plain ones. A class absent from the training
labels is never predicted by the balanced probe (no evidence, and ``log 0`` has no finite shift).
One training serves both figures, so the balanced figure costs nothing extra.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
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

log = logging.getLogger(__name__)


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


def class_log_prior(train_labels: Tensor, num_classes: int) -> Tensor:
    """``log(n_c / N)`` of the training labels, ``[num_classes]`` float; ``-inf`` for an absent class."""
    counts = torch.bincount(train_labels.detach().long().cpu(), minlength=num_classes).double()
    return (counts / counts.sum()).log().float()


def logit_adjusted(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment: ``logits - tau * log_prior`` (Menon et al. 2021).

    Classes with ``log_prior = -inf`` (absent from the training labels) get ``-inf`` (never
    predicted) instead of ``+inf``.
    """
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
    log_prior = log_prior.to(device=logits.device, dtype=logits.dtype)
    present = torch.isfinite(log_prior)
    shift = torch.where(present, tau * log_prior, torch.zeros_like(log_prior))
    adjusted = logits - shift
    return adjusted.masked_fill(~present, float("-inf"))


def standardize_features(train: Tensor, test: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-dimension z-score of both sets with the *training* set's mean and std (a constant
    dimension, std < ``eps``, is only centred). Used for the raw-pixel linear baseline."""
    train, test = train.detach().float(), test.detach().float()
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True)
    std = torch.where(std < eps, torch.ones_like(std), std)
    return (train - mean) / std, (test - mean.to(test.device)) / std.to(test.device)


@dataclass(frozen=True)
class LinearProbeResult:
    """Plain and class-balanced (logit-adjusted) predictions of one trained linear probe.

    ``top1`` / ``balanced_top1`` are test top-1 in percent; ``pred`` / ``balanced_pred`` the ``[N]``
    test predictions (CPU); ``train_class_counts`` the ``[C]`` training images per class (for
    :func:`cld_lightning.longtail.shot_accuracy`).
    """

    top1: float
    balanced_top1: float
    pred: Tensor
    balanced_pred: Tensor
    train_class_counts: Tensor


def linear_probe_result(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    config: LinearProbeConfig = FAST_RECIPE,
    tau: float = 1.0,
) -> LinearProbeResult:
    """Train a linear classifier on frozen features; plain and logit-adjusted test predictions.

    Args:
        train_features: ``[N_train, D]`` frozen backbone features.
        train_labels: ``[N_train]`` labels in ``[0, num_classes)``.
        test_features: ``[N_test, D]``.
        test_labels: ``[N_test]``.
        num_classes: number of classes.
        config: :data:`FAST_RECIPE` (default, L-BFGS) or :data:`REFERENCE_RECIPE` (SGD lr 30,
            100 epochs, steps at 60/80); see the module docstring for the protocol difference.
        tau: logit-adjustment strength of the balanced predictions (1 = Menon et al.'s default).
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
    log_prior = class_log_prior(train_labels, num_classes)
    logit_adjusted(torch.zeros(1, num_classes), log_prior, tau)  # validates tau before training
    clf = train_linear_classifier(train_features, train_labels, num_classes, config)
    with torch.no_grad():
        x = test_features.detach().float().to(clf.weight.device)
        if config.normalize:
            x = F.normalize(x, dim=1)
        logits = clf(x)
        pred = logits.argmax(dim=1).cpu()
        balanced_pred = logit_adjusted(logits, log_prior, tau).argmax(dim=1).cpu()
    target = test_labels.cpu()
    return LinearProbeResult(
        top1=100.0 * float((pred == target).double().mean()),
        balanced_top1=100.0 * float((balanced_pred == target).double().mean()),
        pred=pred,
        balanced_pred=balanced_pred,
        train_class_counts=torch.bincount(train_labels.cpu(), minlength=num_classes),
    )


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    config: LinearProbeConfig = FAST_RECIPE,
    balanced: bool = False,
    tau: float = 1.0,
) -> float:
    """Train a linear classifier on frozen features and return its test top-1 in percent.

    ``balanced=True`` returns the top-1 of the logit-adjusted (class-balanced) predictions
    instead; see :func:`linear_probe_result` for the arguments and both figures at once.
    """
    result = linear_probe_result(
        train_features, train_labels, test_features, test_labels, num_classes, config, tau
    )
    return result.balanced_top1 if balanced else result.top1


def _flat_pixels(images: Tensor) -> Tensor:
    return images.flatten(1).float()


def _pixel_elements(loader: Iterable) -> int | None:
    """``len(dataset) x pixels per image`` of a map-style loader, ``None`` when not knowable."""
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) * int(dataset[0][0].numel())  # type: ignore[arg-type,index]
    except Exception:  # noqa: BLE001 (an iterable or unusual dataset: no estimate)
        return None


# raw-pixel probe skipped above this many training-set pixel values (4 GB of float32)
MAX_PIXEL_ELEMENTS = 1_000_000_000


def linear_baselines(
    model: nn.Module,
    memory_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    config: LinearProbeConfig = FAST_RECIPE,
    seed: int = 0,
    device: torch.device | str | None = None,
    tau: float | None = None,
    max_pixel_elements: int = MAX_PIXEL_ELEMENTS,
    standardize: bool = False,
) -> dict[str, float]:
    """The linear probe's two baselines, same recipe, memory set and test set as ``linear/top1``.

    Returns ``linear/pixel_top1``: the probe on the test-transformed images, flattened and
    standardised per pixel with the memory set's mean and std (:func:`standardize_features`; then
    the recipe's own normalisation), and ``linear/random_init_top1``: the probe on the backbone
    feature (``model.features``) of an untrained copy re-initialised under ``seed``
    (:func:`cld_lightning.eval.baselines.reinitialized_copy`, the kNN baseline's seed scheme).
    With ``tau`` set, also the logit-adjusted ``linear/pixel_balanced_top1`` and
    ``linear/random_init_balanced_top1``. ``standardize=True`` also standardises the untrained
    network's features (as ``cld-eval linear.standardize=true`` does the learned ones; the pixels
    always are). Unlabelled memory images (label < 0) are left out.
    The pixel probe is skipped (with a warning) when the memory set has more than
    ``max_pixel_elements`` pixel values.
    """
    from cld_lightning.eval.baselines import reinitialized_copy
    from cld_lightning.eval.features import extract_features

    def probe(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], name: str) -> None:
        keep = train[1] >= 0
        res = linear_probe_result(
            train[0][keep], train[1][keep], test[0], test[1], num_classes, config, tau or 0.0
        )
        out[f"linear/{name}_top1"] = res.top1
        if tau is not None:
            out[f"linear/{name}_balanced_top1"] = res.balanced_top1

    out: dict[str, float] = {}
    size = _pixel_elements(memory_loader)
    if size is not None and size > max_pixel_elements:
        log.warning(
            "linear/pixel_top1 skipped: %d pixel values in the memory set (> %d)",
            size,
            max_pixel_elements,
        )
    else:
        identity = nn.Identity()
        mem_x, mem_y, _ = extract_features(identity, memory_loader, "cpu", _flat_pixels)
        test_x, test_y, _ = extract_features(identity, test_loader, "cpu", _flat_pixels)
        mem_x, test_x = standardize_features(mem_x, test_x)
        probe((mem_x, mem_y), (test_x, test_y), "pixel")
        del mem_x, test_x
    untrained = reinitialized_copy(model, seed)
    feat = untrained.features  # type: ignore[assignment]
    mem_f, mem_y, _ = extract_features(untrained, memory_loader, device, feat)  # type: ignore[arg-type]
    test_f, test_y, _ = extract_features(untrained, test_loader, device, feat)  # type: ignore[arg-type]
    if standardize:
        mem_f, test_f = standardize_features(mem_f, test_f)
    probe((mem_f, mem_y), (test_f, test_y), "random_init")
    return out
