"""Batch k-means for CLD's *local grouping* (paper §3: "local instance grouping").

Matches the reference implementation (frank-xwang/CLD-UnsupervisedLearning): first-``k`` rows as
the initial centroids, squared Euclidean distance, arithmetic-mean centroids that are **not**
re-normalised, an empty cluster's centroid is the zero vector, and ``k > N`` leaves the last
``k - N`` centroids at zero. Labels come from an ``argmin`` (no gradient) while the final centroids
are differentiable means of the inputs, so gradients flow through them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

KMeansInit = Literal["first", "kmeans++"]
EmptyCluster = Literal["zero", "keep"]


def _check_inputs(x: Tensor, num_clusters: int, num_iters: int) -> None:
    if x.dim() != 2:
        raise ValueError(f"batch_kmeans expects features of shape [N, D], got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError("batch_kmeans needs at least one sample (N >= 1)")
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")


def squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """``||x_i - c_j||^2`` for all pairs, ``[N, K]``, via one matrix product (no ``[N, K, D]``)."""
    x_sq = (x * x).sum(dim=1, keepdim=True)
    c_sq = (centroids * centroids).sum(dim=1).unsqueeze(0)
    return (x_sq - 2.0 * (x @ centroids.t()) + c_sq).clamp_min_(0.0)


def cluster_means(
    x: Tensor, labels: Tensor, num_clusters: int, previous: Tensor | None = None
) -> Tensor:
    """Per-cluster arithmetic means ``[K, D]``. An empty cluster gives zero (count clamped to 1,
    the reference), or keeps its row of ``previous`` when that is given."""
    sums = x.new_zeros(num_clusters, x.shape[1]).index_add(0, labels, x)
    counts = torch.bincount(labels, minlength=num_clusters)
    means = sums / counts.clamp_min(1).to(x.dtype).unsqueeze(1)
    if previous is None:
        return means
    return torch.where((counts > 0).unsqueeze(1), means, previous)


def _init_centroids(
    x: Tensor, num_clusters: int, init: KMeansInit, generator: torch.Generator | None
) -> Tensor:
    n = x.shape[0]
    centroids = x.new_zeros(num_clusters, x.shape[1])
    m = min(n, num_clusters)
    if init == "first":
        centroids[:m] = x[:m]
    elif init == "kmeans++":
        # k-means++ seeding (Arthur & Vassilvitskii 2007); first seed = row 0 (the batch is shuffled).
        chosen = [0]
        d2 = squared_distances(x, x[:1]).squeeze(1)
        for _ in range(1, m):
            total = float(d2.sum())
            # all remaining points coincide with a seed, or non-finite features (a diverged
            # network: no sampling from NaN; its loss is non-finite and the step is skipped):
            # take the next unused row
            if not 0.0 < total < math.inf:
                nxt = next(i for i in range(n) if i not in chosen)
            else:
                nxt = int(torch.multinomial(d2 / total, 1, generator=generator).item())
            chosen.append(nxt)
            d2 = torch.minimum(d2, squared_distances(x, x[nxt : nxt + 1]).squeeze(1))
        centroids[:m] = x[torch.tensor(chosen, device=x.device)]
    else:
        raise ValueError(f"kmeans init must be 'first' or 'kmeans++', got {init!r}")
    return centroids


def batch_kmeans(
    x: Tensor,
    num_clusters: int,
    num_iters: int = 5,
    *,
    init: KMeansInit = "first",
    spherical: bool = False,
    generator: torch.Generator | None = None,
    empty: EmptyCluster = "zero",
) -> tuple[Tensor, Tensor]:
    """Cluster the rows of ``x`` into ``num_clusters`` groups with ``num_iters`` Lloyd steps.

    Args:
        x: ``[N, D]`` features (CLD: the L2-normalised group-branch features ``g``).
        num_clusters: ``k``; may exceed ``N`` (then every point is its own cluster and the remaining
            centroids are zero, as in the reference ImageNet recipe).
        num_iters: Lloyd iterations (assign, then recompute means); the reference uses 5.
        init: ``"first"`` (reference: first ``k`` rows) or ``"kmeans++"`` (option).
        spherical: option; cosine k-means, centroids re-normalised after each update.
        generator: RNG for ``kmeans++``.
        empty: an empty cluster's centroid: ``"zero"`` (reference) or ``"keep"`` its previous
            centroid (option; the label-free selection metrics use it).

    Returns:
        ``(labels [N] long, centroids [K, D])``: the last assignment and the means of its clusters
        (differentiable w.r.t. ``x``). Computed in ``x``'s dtype with autocast disabled.
    """
    _check_inputs(x, num_clusters, num_iters)
    if empty not in ("zero", "keep"):
        raise ValueError(f"kmeans empty must be 'zero' or 'keep', got {empty!r}")
    keep = empty == "keep"
    with torch.autocast(device_type=x.device.type, enabled=False):
        with torch.no_grad():
            xd = x.detach()
            centroids = _init_centroids(xd, num_clusters, init, generator)
            if spherical:
                centroids = torch.nn.functional.normalize(centroids, dim=1)
            for it in range(num_iters):
                labels = squared_distances(xd, centroids).argmin(dim=1)
                if it < num_iters - 1:
                    centroids = cluster_means(xd, labels, num_clusters, centroids if keep else None)
                    if spherical:
                        centroids = torch.nn.functional.normalize(centroids, dim=1)
        # Final centroids: recomputed with gradient from the last assignment.
        centroids = cluster_means(x, labels, num_clusters, centroids if keep else None)
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    return labels, centroids
