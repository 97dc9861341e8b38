"""A deliberately naive, loop-based transcription of the reference CLD code, for comparisons."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_kmeans(x: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """frank-xwang/CLD KMeans: first-k init, broadcast squared distances, mean centroids."""
    n, d = x.shape
    c = torch.zeros(k, d, dtype=x.dtype)
    m = min(n, k)
    c[:m] = x[:m].detach()
    for it in range(iters):
        dist = ((x.detach()[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        labels = dist.argmin(dim=1)
        # centroids: python loop over clusters, differentiable on the last iteration
        src = x if it == iters - 1 else x.detach()
        rows = []
        for j in range(k):
            members = src[labels == j]
            rows.append(members.mean(0) if len(members) else torch.zeros(d, dtype=x.dtype))
        c_new = torch.stack(rows)
        if it < iters - 1:
            c = c_new
    return labels, c_new


def reference_cld_loss(g1: torch.Tensor, g2: torch.Tensor, k: int, tau: float, iters: int = 5):
    l1, c1 = reference_kmeans(g1, k, iters)
    l2, c2 = reference_kmeans(g2, k, iters)
    loss12 = F.cross_entropy(g1 @ c2.t() / tau, l2)
    loss21 = F.cross_entropy(g2 @ c1.t() / tau, l1)
    return 0.5 * (loss12 + loss21)
