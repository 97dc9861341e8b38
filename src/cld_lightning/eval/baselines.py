"""The two baselines every kNN figure is shown with (CLD.md §3): raw pixels and the same
network untrained, under the same weighted-kNN protocols (memory set, test set, ``k``, ``σ``;
NPID and class-balanced votes, shot groups): :func:`cld_lightning.eval.knn_report`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.eval.features import extract_features, packed_embedding
from cld_lightning.eval.knn import KnnOptions
from cld_lightning.eval.knn_summary import knn_report


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
    options = KnnOptions(k, temperature)
    report = knn_reports(
        model, memory_loader, test_loader, num_classes, ("knn/",), options, embed_fn, device
    )
    return report["knn/top1"]


def knn_reports(
    model: nn.Module,
    memory_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    prefixes: Sequence[str],
    options: KnnOptions = KnnOptions(),
    embed_fn: Callable[[Tensor], Tensor | tuple[Tensor, ...]] | None = None,
    device: torch.device | str | None = None,
    long_tail: bool | None = None,
) -> dict[str, float]:
    """:func:`~cld_lightning.eval.knn_report` of each feature ``embed_fn`` (default
    ``model.embed``) returns (a tensor or a tuple of tensors, one key prefix each), from one pass
    over each loader."""
    fn = embed_fn if embed_fn is not None else model.embed  # type: ignore[assignment]
    packed, widths = packed_embedding(fn)
    mem_z, mem_y, _ = extract_features(model, memory_loader, device, embed_fn=packed)
    test_z, test_y, _ = extract_features(model, test_loader, device, embed_fn=packed)
    if len(widths) != len(prefixes):
        raise ValueError(f"embed_fn returned {len(widths)} feature(s) for {len(prefixes)} prefixes")
    out: dict[str, float] = {}
    for m, t, prefix in zip(
        mem_z.split(widths, dim=1), test_z.split(widths, dim=1), prefixes, strict=True
    ):
        out.update(
            knn_report(
                m,
                mem_y,
                t,
                test_y,
                num_classes,
                prefix=prefix,
                long_tail=long_tail,
                **asdict(options),
            )
        )
    return out


def embedding_and_feature(model: nn.Module) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
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
    long_tail: bool | None = None,
) -> dict[str, float]:
    """:func:`~cld_lightning.eval.knn_report` of the baselines and of the learned backbone
    feature, same protocol (memory and test sets, ``k``, ``σ``).

    Key prefixes: ``knn/pixel_`` (raw pixels), ``knn/random_init_`` (the kNN embedding of a seeded
    untrained copy: ``model.embed``), ``knn/random_init_backbone_`` (its backbone feature,
    ``model.features``) and ``knn/backbone_`` (the trained backbone feature); e.g.
    ``knn/pixel_top1`` and ``knn/pixel_balanced_top1`` (class-balanced votes), and on a
    long-tailed memory (or ``long_tail=True``) ``knn/pixel_many``, ``knn/pixel_balanced_few``...
    ``model`` must expose ``features`` and ``embed_features`` (every :class:`SSLMethod` does).
    Features are L2-normalised by the kNN; one pass over the loaders per network.
    """
    untrained = reinitialized_copy(model, seed)
    common = {"options": KnnOptions(k, temperature), "long_tail": long_tail}
    out = knn_reports(
        nn.Identity(),
        memory_loader,
        test_loader,
        num_classes,
        ("knn/pixel_",),
        embed_fn=pixel_embed,
        device="cpu",
        **common,
    )
    out |= knn_reports(
        untrained,
        memory_loader,
        test_loader,
        num_classes,
        ("knn/random_init_", "knn/random_init_backbone_"),
        embed_fn=embedding_and_feature(untrained),
        device=device,
        **common,
    )
    out |= knn_reports(
        model,
        memory_loader,
        test_loader,
        num_classes,
        ("knn/backbone_",),
        embed_fn=model.features,  # type: ignore[arg-type]
        device=device,
        **common,
    )
    return out
