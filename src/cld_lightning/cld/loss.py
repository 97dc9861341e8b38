"""CLD's cross-level instance-group discrimination loss (paper Eq. 5-6), as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cld_lightning.cld.kmeans import KMeansInit, batch_kmeans
from cld_lightning.modules.precision import at_least_fp32


@dataclass(frozen=True)
class CrossLevelOutput:
    """The loss and what the CLD callback/mixin logs about the local groups."""

    loss: Tensor
    """Scalar ``L_CLD`` (differentiable)."""
    group_acc: Tensor
    """How often ``argmax(g1 · M2ᵀ) == Γ2`` (and symmetrically), in ``[0, 1]``; no gradient."""
    labels: tuple[Tensor, Tensor]
    """Cluster assignments ``(Γ1, Γ2)``."""
    centroids: tuple[Tensor, Tensor]
    """Centroids ``(M1, M2)``."""
    cluster_sizes: tuple[Tensor, Tensor]
    """Members per cluster for each view, ``[K]`` long."""


def cross_level_logits(g: Tensor, centroids: Tensor, temperature: float) -> Tensor:
    """Instance-vs-group logits ``g · Mᵀ / τ_G`` (dot products with non-normalised centroids)."""
    return g @ centroids.t() / temperature


def cross_level_loss_with_stats(
    g1: Tensor,
    g2: Tensor,
    num_clusters: int,
    temperature: float,
    num_iters: int = 5,
    *,
    kmeans_init: KMeansInit = "first",
    spherical: bool = False,
    detach_centroids: bool = False,
) -> CrossLevelOutput:
    """``L_CLD = ½[CE(g1·M2ᵀ/τ_G, Γ2) + CE(g2·M1ᵀ/τ_G, Γ1)]`` with ``(Γ, M) = kmeans(g)``.

    Each instance of one view is contrasted against the *other* view's local-group centroids, with
    the other view's cluster as its target. Computed with autocast disabled, in fp32 at least (half inputs are upcast).
    ``detach_centroids`` is an option (a different objective): the reference lets gradients flow
    through the centroids.
    """
    if g1.shape != g2.shape:
        raise ValueError(
            f"g1 and g2 must have the same shape, got {tuple(g1.shape)} and {tuple(g2.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=g1.device.type, enabled=False):
        g1, g2 = at_least_fp32(g1), at_least_fp32(g2)
        labels1, cent1 = batch_kmeans(
            g1, num_clusters, num_iters, init=kmeans_init, spherical=spherical
        )
        labels2, cent2 = batch_kmeans(
            g2, num_clusters, num_iters, init=kmeans_init, spherical=spherical
        )
        if detach_centroids:
            cent1, cent2 = cent1.detach(), cent2.detach()
        logits12 = cross_level_logits(g1, cent2, temperature)
        logits21 = cross_level_logits(g2, cent1, temperature)
        loss = 0.5 * (F.cross_entropy(logits12, labels2) + F.cross_entropy(logits21, labels1))
        with torch.no_grad():
            acc = 0.5 * (
                (logits12.argmax(1) == labels2).float().mean()
                + (logits21.argmax(1) == labels1).float().mean()
            )
            sizes1 = torch.bincount(labels1, minlength=num_clusters)
            sizes2 = torch.bincount(labels2, minlength=num_clusters)
    return CrossLevelOutput(loss, acc, (labels1, labels2), (cent1, cent2), (sizes1, sizes2))


def cross_level_loss(
    g1: Tensor,
    g2: Tensor,
    num_clusters: int,
    temperature: float,
    num_iters: int = 5,
    **options: object,
) -> Tensor:
    """Scalar ``L_CLD``; see :func:`cross_level_loss_with_stats` for the options and statistics."""
    return cross_level_loss_with_stats(
        g1,
        g2,
        num_clusters,
        temperature,
        num_iters,
        **options,  # type: ignore[arg-type]
    ).loss
