"""The two baselines every kNN figure is shown with (CLD.md §3): raw pixels and the same
network untrained, under the same weighted-kNN protocol (memory set, test set, ``k``, ``σ``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

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
    pred = weighted_knn(mem_x[keep], mem_y[keep], test[0], num_classes, k=k, temperature=t)
    return float((pred.cpu() == test[1].cpu()).float().mean() * 100.0)


def knn_top1(
    model: nn.Module,
    memory_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    embed_fn: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Weighted kNN top-1 (%) of ``embed_fn`` (default ``model.embed``) on ``test_loader`` with
    ``memory_loader`` as the labelled memory set; the model's training state is untouched."""
    return knn_top1_many(
        model, memory_loader, test_loader, num_classes, k, temperature, embed_fn, device
    )[0]


def knn_top1_many(
    model: nn.Module,
    memory_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    embed_fn: Callable[[Tensor], Tensor | tuple[Tensor, ...]] | None = None,
    device: torch.device | str | None = None,
) -> list[float]:
    """:func:`knn_top1` of each feature ``embed_fn`` returns (a tensor or a tuple of tensors),
    from one pass over each loader."""
    fn = embed_fn if embed_fn is not None else model.embed  # type: ignore[assignment]

    def packed(x: Tensor) -> Tensor:
        out = fn(x)
        parts = out if isinstance(out, tuple) else (out,)
        widths.extend(p.shape[1] for p in parts[len(widths) :])
        return torch.cat([p.float() for p in parts], dim=1)

    widths: list[int] = []
    mem_z, mem_y, _ = extract_features(model, memory_loader, device, embed_fn=packed)
    test_z, test_y, _ = extract_features(model, test_loader, device, embed_fn=packed)
    out = []
    for m, t in zip(mem_z.split(widths, dim=1), test_z.split(widths, dim=1), strict=True):
        out.append(_top1((m, mem_y), (t, test_y), num_classes, k, temperature))
    return out


def _embedding_and_feature(model: nn.Module) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """One backbone pass giving the kNN embedding and the backbone feature."""

    def fn(x: Tensor) -> tuple[Tensor, Tensor]:
        f = model.features(x)  # type: ignore[operator]
        return model.embed_features(f), f  # type: ignore[operator]

    return fn


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

    Returns ``knn/pixel_top1`` (raw pixels), ``knn/random_init_top1`` (the kNN embedding of a
    seeded untrained copy: ``model.embed``), ``knn/random_init_backbone_top1`` (its backbone
    feature, ``model.features``) and ``knn/backbone_top1`` (the trained backbone feature).
    ``model`` must expose ``features`` and ``embed_features`` (every :class:`SSLMethod` does).
    Features are L2-normalised by the kNN; one pass over the loaders per network.
    """
    untrained = reinitialized_copy(model, seed)
    out: dict[str, float] = {}
    out["knn/pixel_top1"] = knn_top1(
        nn.Identity(), memory_loader, test_loader, num_classes, k, temperature, pixel_embed, "cpu"
    )
    out["knn/random_init_top1"], out["knn/random_init_backbone_top1"] = knn_top1_many(
        untrained,
        memory_loader,
        test_loader,
        num_classes,
        k,
        temperature,
        _embedding_and_feature(untrained),
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
