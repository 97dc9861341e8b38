"""The two baselines every kNN figure is shown with (CLD.md §3): raw pixels and the same
network untrained, under the same weighted-kNN protocol (memory set, test set, ``k``, ``σ``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.eval.features import extract_features
from cld_lightning.eval.knn import weighted_knn


def reinitialized_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every submodule's ``reset_parameters`` (and BatchNorm running
    statistics) re-run under ``torch.manual_seed(seed)``: the same architecture, untrained.

    The global RNG state is restored afterwards, so calling this never perturbs training.
    """
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    return fresh


def pixel_embed(images: Tensor) -> Tensor:
    """Raw-pixel feature: the test-transformed image, flattened and L2-normalised."""
    return F.normalize(images.flatten(1).float(), dim=1)


def _top1(
    mem: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, k: int, t: float
) -> float:
    mem_x, mem_y = mem
    keep = mem_y >= 0  # unlabelled images cannot vote
    pred = weighted_knn(
        F.normalize(mem_x[keep], dim=1),
        mem_y[keep],
        F.normalize(test[0], dim=1),
        num_classes,
        k=k,
        temperature=t,
    )
    return float((pred.cpu() == test[1].cpu()).float().mean() * 100.0)


def knn_top1(
    embed: nn.Module,
    memory_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    embed_fn=None,  # noqa: ANN001 - Callable[[Tensor], Tensor]
    device: torch.device | str | None = None,
) -> float:
    """Weighted kNN top-1 (%) of ``embed_fn`` (default ``model.embed``) on ``test_loader`` with
    ``memory_loader`` as the labelled memory set; the model's training state is untouched."""
    mem_z, mem_y, _ = extract_features(embed, memory_loader, device, embed_fn=embed_fn)
    test_z, test_y, _ = extract_features(embed, test_loader, device, embed_fn=embed_fn)
    return _top1((mem_z, mem_y), (test_z, test_y), num_classes, k, temperature)


def knn_baselines(
    model: nn.Module,
    memory_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """kNN top-1 (%) of the baselines and of the learned backbone feature, same protocol.

    Returns ``knn/pixel_top1`` (raw pixels), ``knn/random_init_top1`` (the instance embedding of a
    seeded untrained copy: ``model.embed``), ``knn/random_init_backbone_top1`` (its backbone
    feature, ``model.features``) and ``knn/backbone_top1`` (the trained backbone feature).
    ``model`` must expose ``embed`` and ``features`` (every :class:`SSLMethod` does).
    """
    untrained = reinitialized_copy(model, seed)
    out: dict[str, float] = {}
    out["knn/pixel_top1"] = knn_top1(
        nn.Identity(), memory_loader, test_loader, num_classes, k, temperature, pixel_embed, "cpu"
    )
    out["knn/random_init_top1"] = knn_top1(
        untrained, memory_loader, test_loader, num_classes, k, temperature, device=device
    )
    out["knn/random_init_backbone_top1"] = knn_top1(
        untrained,
        memory_loader,
        test_loader,
        num_classes,
        k,
        temperature,
        untrained.features,  # type: ignore[arg-type]
        device,
    )
    out["knn/backbone_top1"] = knn_top1(
        model,
        memory_loader,
        test_loader,
        num_classes,
        k,
        temperature,
        model.features,
        device,  # type: ignore[arg-type]
    )
    return out
