"""Weighted k-nearest-neighbour classifier, NPID protocol (Wu et al. 2018; CLD.md §3).

For each test feature, the ``k`` training features of highest cosine similarity ``s`` vote for
their label with weight ``exp(s / temperature)``; the prediction is the label with the largest
summed vote. Both feature sets are L2-normalised first (``normalize=True``, the default), so the
inner product is the cosine similarity; ``normalize=False`` skips that copy for features that are
unit-norm already and raises if they are not (an inner product of unnormalised features is not the
protocol and silently gives other neighbours).

``balanced=True`` is the class-balanced protocol for a long-tailed memory (CLD.md §3): each
neighbour's vote is divided by its class's count in the memory (multiplied by ``n_max / n_c``,
:func:`class_balance_weights`), so a rare class whose images are the nearest is not outvoted by
the many head-class images further down the top ``k``. On a balanced memory every multiplier is
exactly 1 and the predictions are those of the plain protocol, bit for bit.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from cld_lightning.eval._checks import (
    as_feature_matrix,
    as_label_vector,
    as_test_set,
    check_positive_float,
    check_positive_int,
    check_same_length,
)
from cld_lightning.longtail.accuracy import per_class_accuracy

Backend = Literal["auto", "torch", "faiss"]
BACKENDS = ("auto", "torch", "faiss")

#: ``backend="auto"`` switches to faiss from this many training features on (when importable).
FAISS_AUTO_MIN_TRAIN = 50_000
#: ``normalize=False`` accepts rows whose L2 norm is within this of 1 (or exactly 0)
UNIT_NORM_TOLERANCE = 1e-2
#: Default memory budget (elements of the ``[chunk, N_train]`` similarity block) of the torch path.
_SIM_BLOCK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class KnnOptions:
    """The settings of one weighted-kNN evaluation, validated once (errors name the field).

    Attributes:
        k: neighbours per query; clipped to the memory size.
        temperature: σ of the vote weight ``exp(s/σ)`` (0.1 NPID, 0.07 MoCo).
        chunk_size: test rows processed at once (memory ``chunk_size x N_train``); ``None``
            picks a size keeping the similarity block near 64M elements.
        backend: ``"torch"`` (exact matmul + top-k, on the memory's device), ``"faiss"`` (exact
            ``IndexFlatIP`` on the CPU) or ``"auto"`` (faiss when importable and
            ``N_train >= 50_000``, else torch). Both give the same predictions up to ties.
        normalize: L2-normalise both feature sets first (default). ``False``: the features are
            unit-norm already (no copy is made); a row whose norm is not 1 (within
            ``UNIT_NORM_TOLERANCE``; all-zero rows allowed) raises ``ValueError``.
    """

    k: int = 200
    temperature: float = 0.1
    chunk_size: int | None = None
    backend: Backend = "auto"
    normalize: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.k, "k")
        object.__setattr__(
            self, "temperature", check_positive_float(self.temperature, "temperature")
        )
        if self.chunk_size is not None:
            check_positive_int(self.chunk_size, "chunk_size")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @classmethod
    def of(cls, k: int = 200, temperature: float = 0.1, **settings: Any) -> KnnOptions:
        """``KnnOptions(k, temperature, **settings)`` with an unknown setting named in the error."""
        unknown = sorted(set(settings) - {"chunk_size", "backend", "normalize"})
        if unknown:
            raise TypeError(
                f"unknown kNN setting(s) {', '.join(unknown)}; valid: k, temperature, "
                "chunk_size, backend, normalize"
            )
        return cls(k, temperature, **settings)


def faiss_available() -> bool:
    """True when the optional ``faiss`` package can be imported."""
    return importlib.util.find_spec("faiss") is not None


def resolve_backend(backend: str, num_train: int) -> Literal["torch", "faiss"]:
    """Map ``backend`` (``auto``/``torch``/``faiss``) to the backend actually used."""
    if backend == "torch":
        return "torch"
    if backend == "faiss":
        if not faiss_available():
            raise ImportError(
                "backend='faiss' needs the faiss package: pip install 'cld-lightning[faiss]'"
            )
        return "faiss"
    if backend == "auto":
        use_faiss = num_train >= FAISS_AUTO_MIN_TRAIN and faiss_available()
        return "faiss" if use_faiss else "torch"
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _torch_topk(train: Tensor, test: Tensor, k: int, chunk_size: int):
    """Yield ``(similarities [B, k], indices [B, k])`` per test chunk, exact, with torch."""
    for start in range(0, test.shape[0], chunk_size):
        block = test[start : start + chunk_size].to(train.device, train.dtype)
        sims = block @ train.T
        yield sims.topk(k, dim=1)


def _faiss_topk(train: Tensor, test: Tensor, k: int, chunk_size: int):
    """Yield ``(similarities [B, k], indices [B, k])`` per test chunk from a faiss IndexFlatIP."""
    import faiss  # lazy: optional dependency

    train_np = train.detach().to("cpu", torch.float32).contiguous().numpy()
    index = faiss.IndexFlatIP(train_np.shape[1])
    index.add(train_np)
    for start in range(0, test.shape[0], chunk_size):
        block = test[start : start + chunk_size].detach().to("cpu", torch.float32).contiguous()
        sims, idx = index.search(block.numpy(), k)
        yield torch.from_numpy(sims), torch.from_numpy(idx).long()


def check_unit_norm(features: Tensor, name: str) -> None:
    """Raise unless every row of ``features`` has L2 norm 1 (or 0), up to ``UNIT_NORM_TOLERANCE``."""
    norms = features.detach().float().norm(dim=1)
    bad = ((norms - 1.0).abs() > UNIT_NORM_TOLERANCE) & (norms != 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"weighted_knn(normalize=False): {name} must be L2-normalised, but "
            f"{int(bad.sum())} row(s) are not (row {i} has norm {float(norms[i]):.4g}); "
            "pass normalize=True (the default)"
        )


def knn_votes(
    similarities: Tensor, neighbour_labels: Tensor, num_classes: int, temperature: float
) -> Tensor:
    """Sum ``exp(s / temperature)`` per class over the neighbours: ``[B, k] -> [B, num_classes]``.

    Each row is shifted by its largest similarity before the exponential; this rescales a row's
    votes by a positive constant (so the argmax is unchanged) and avoids overflow for small
    temperatures.
    """
    sims = similarities if similarities.dtype == torch.float64 else similarities.float()
    weights = ((sims - sims.max(dim=1, keepdim=True).values) / temperature).exp()
    votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype, device=sims.device)
    return votes.scatter_add_(1, neighbour_labels, weights)


def _checked_knn_inputs(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate :func:`weighted_knn`'s feature matrices and labels (clear errors naming them)."""
    train_features = as_feature_matrix(train_features, "train_features")
    test_features = as_feature_matrix(test_features, "test_features")
    num_classes = check_positive_int(num_classes, "num_classes")
    train_labels = as_label_vector(train_labels, "train_labels", num_classes)
    check_same_length(train_features, train_labels, "train_features", "train_labels")
    if train_features.shape[0] == 0:
        raise ValueError("train_features must contain at least one row, got 0")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            "train_features and test_features must have the same feature dimension, got "
            f"{train_features.shape[1]} and {test_features.shape[1]}"
        )
    return train_features, train_labels, test_features


def class_balance_weights(train_labels: Tensor, num_classes: int) -> Tensor:
    """Vote multipliers of the class-balanced protocol: ``n_max / n_c`` per class (``[C]``
    float64, on ``train_labels.device``), 0 for a class absent from the memory; exactly 1 for
    every class of a balanced memory."""
    counts = torch.bincount(train_labels.long(), minlength=num_classes)[:num_classes].double()
    return torch.where(counts > 0, counts.max() / counts.clamp(min=1), torch.zeros_like(counts))


def _vote_chunks(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    options: KnnOptions,
) -> Iterator[Tensor]:
    """The NPID votes ``[B, num_classes]`` of each test chunk (inputs validated here)."""
    train_features, train_labels, test_features = _checked_knn_inputs(
        train_features, train_labels, test_features, num_classes
    )
    num_train = train_features.shape[0]
    chunk_size = options.chunk_size
    if chunk_size is None:
        chunk_size = max(1, min(4096, _SIM_BLOCK_ELEMENTS // num_train))
    which = resolve_backend(options.backend, num_train)
    if test_features.shape[0] == 0:
        return
    train_features = train_features.detach()
    test_features = test_features.detach()
    if options.normalize:
        train_features = F.normalize(train_features, dim=1)
        test_features = F.normalize(test_features, dim=1)
    else:
        check_unit_norm(train_features, "train_features")
        check_unit_norm(test_features, "test_features")
    k = min(options.k, num_train)
    search = _faiss_topk if which == "faiss" else _torch_topk
    for sims, idx in search(train_features, test_features, k, chunk_size):
        yield knn_votes(sims, train_labels.to(idx.device)[idx], num_classes, options.temperature)


def knn_predictions(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    options: KnnOptions = KnnOptions(),
    balanced: Sequence[bool] = (False,),
) -> list[Tensor]:
    """:func:`weighted_knn` for each entry of ``balanced`` (plain / class-balanced protocol) from
    one neighbour search; ``[N_test]`` long tensors on ``test_features.device``."""
    num_classes = check_positive_int(num_classes, "num_classes")
    out_device = test_features.device if isinstance(test_features, Tensor) else None
    weights: list[Tensor | None] = []
    preds: list[list[Tensor]] = [[] for _ in balanced]
    for votes in _vote_chunks(train_features, train_labels, test_features, num_classes, options):
        if not weights:
            w = class_balance_weights(train_labels.to(votes.device), num_classes).to(votes.dtype)
            weights = [w if b else None for b in balanced]
        for out, w in zip(preds, weights, strict=True):
            scores = votes if w is None else votes * w
            out.append(scores.argmax(dim=1).to(out_device))
    empty = torch.empty(0, dtype=torch.long, device=out_device)
    return [torch.cat(p) if p else empty for p in preds]


def weighted_knn(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    normalize: bool = True,
    balanced: bool = False,
) -> Tensor:
    """Predict a label for every test feature by the NPID weighted kNN vote.

    Args:
        train_features: ``[N_train, D]`` memory-set features (L2-normalised).
        train_labels: ``[N_train]`` integer labels in ``[0, num_classes)``.
        test_features: ``[N_test, D]`` query features (L2-normalised).
        num_classes: number of classes.
        k, temperature, chunk_size, backend, normalize: the search and vote settings, see
            :class:`KnnOptions`.
        balanced: the class-balanced protocol: each vote divided by its class's memory count
            (module docstring). ``False`` (default): the NPID protocol.

    Returns:
        ``[N_test]`` long tensor of predicted labels, on ``test_features.device``.
    """
    options = KnnOptions(k, temperature, chunk_size, backend, normalize)
    return knn_predictions(
        train_features, train_labels, test_features, num_classes, options, balanced=(balanced,)
    )[0]


@overload
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = ...,
    temperature: float = ...,
    *,
    per_class: Literal[False] = ...,
    **settings: Any,
) -> float: ...


@overload
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = ...,
    temperature: float = ...,
    *,
    per_class: Literal[True],
    **settings: Any,
) -> tuple[float, Tensor]: ...


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    *,
    per_class: bool = False,
    **settings: Any,
) -> float | tuple[float, Tensor]:
    """Weighted-kNN top-1 accuracy in percent (see :func:`weighted_knn` for the arguments;
    ``settings``: ``chunk_size``, ``backend``, ``normalize`` of :class:`KnnOptions`).

    With ``per_class=True`` also returns a ``[num_classes]`` float tensor of per-class accuracies
    in percent (NaN for a class with no test sample).
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    test_features, test_labels = as_test_set(test_features, test_labels, num_classes)
    options = KnnOptions.of(k, temperature, **settings)
    pred = knn_predictions(train_features, train_labels, test_features, num_classes, options)[0]
    pred = pred.cpu()
    target = test_labels.cpu()
    correct = (pred == target).double()
    top1 = 100.0 * float(correct.mean())
    if not per_class:
        return top1
    return top1, per_class_accuracy(pred, target, num_classes)
