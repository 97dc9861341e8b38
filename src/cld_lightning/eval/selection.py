"""Label-free model selection: scores of an embedding computed without any label.

The paper proposes tuning λ, k and τ_G without labels (CLD.md §3). Given the embeddings
``z1, z2`` of two augmented views of the same held-out images, :func:`label_free_metrics` returns

- ``retrieval_top1`` (higher is better): % of images whose view-1 embedding has its own view-2
  embedding as strict nearest neighbour among all held-out view-2 embeddings (a tie counts as a
  miss). It is the instance-discrimination task itself, on unseen data.
- ``alignment`` (lower is better): ``mean ||z1 - z2||^2`` (Wang & Isola 2020, α = 2).
- ``uniformity`` (lower is better): ``log mean_{i != j} exp(-2 ||z_i - z_j||^2)``, averaged over
  the two views (Wang & Isola 2020, t = 2).
- ``group_agreement`` (higher is better): k-means on each view; % of images whose view-1
  embedding's best view-2 centroid (largest dot product, as CLD's logits) is its view-2 cluster,
  averaged with the symmetric direction. It is CLD's "group accuracy" on held-out data.
- ``group_ami``: adjusted mutual information of the two views' k-means partitions (needs
  scikit-learn; NaN without it).
- ``rankme`` (higher is better): RankMe (Garrido et al., ICML 2023), the effective rank
  ``exp(H(p))`` of the embedding matrix, ``p = σ / ||σ||_1`` over its singular values (both views
  stacked). With ``features`` given (the backbone's pooled feature of the same views), also
  ``rankme_feature`` (RankMe as the paper computes it, on the representation) and
  ``alpha_req_feature``: the α of α-ReQ (Agrawal et al., NeurIPS 2022), the power-law decay of the
  feature covariance's eigenvalues ``λ_i ∝ i^-α``; the paper finds α near 1 best, so its score is
  ``-|α - 1|``.
- ``lidar`` (higher is better): LiDAR (Thilak et al., ICLR 2024), the effective rank of the LDA
  matrix with each image a surrogate class and its views the class's samples
  (:mod:`cld_lightning.eval.lidar`); on the two views by default, on ``lidar_views`` when given.
  With ``features``, also ``lidar_feature`` (LiDAR of the backbone feature).
- ``label_free_score``: the scalar to maximise, ``retrieval_top1`` by default.

Why retrieval is the default: each of the other components can be gamed by a useless embedding.
A collapsed embedding (every ``z`` equal) has perfect alignment (0) and perfect group agreement
(one cluster); an embedding that ignores the image content but spreads points uniformly has
optimal uniformity. Retrieval rewards only an embedding that is both invariant to the
augmentations *and* discriminative between images: collapse and noise both score ``~1/N``.
All metrics are computed in float64 on the CPU (``O(N^2)`` in chunks; held-out sets of a few
thousand images take well under a second). Its value depends on the gallery size ``N`` and on the views drawn, so rank runs on the same
held-out images with the same seeded augmentations; if it saturates near 100% enlarge ``N``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cld_lightning.cld.kmeans import batch_kmeans
from cld_lightning.eval._checks import as_feature_matrix, check_positive_int
from cld_lightning.eval.lidar import lidar

SCORES = (
    "retrieval",
    "align_uniform",
    "group",
    "rankme",
    "rankme_feature",
    "alpha_req",
    "lidar",
    "lidar_feature",
)
#: scores computed on the backbone feature: they need ``features``
FEATURE_SCORES = ("rankme_feature", "alpha_req", "lidar_feature")


def _pair(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    z1 = as_feature_matrix(z1, "z1")
    z2 = as_feature_matrix(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(f"z1 and z2 need at least 2 rows (images), got {z1.shape[0]}")
    return z1.detach().cpu().double(), z2.detach().cpu().double()


def retrieval_accuracy(z1: Tensor, z2: Tensor, chunk_size: int = 1024) -> float:
    """% of rows ``i`` whose ``z1[i] . z2[i]`` is strictly larger than every ``z1[i] . z2[j]``."""
    z1, z2 = _pair(z1, z2)
    correct = 0
    for start in range(0, z1.shape[0], chunk_size):
        sims = z1[start : start + chunk_size] @ z2.T
        rows = torch.arange(sims.shape[0])
        own = sims[rows, rows + start].clone()
        sims[rows, rows + start] = -math.inf
        correct += int((own > sims.max(dim=1).values).sum())
    return 100.0 * correct / z1.shape[0]


def alignment(z1: Tensor, z2: Tensor) -> float:
    """Mean squared distance between the two views' embeddings, ``mean ||z1 - z2||^2``."""
    z1, z2 = _pair(z1, z2)
    return float((z1 - z2).pow(2).sum(dim=1).mean())


def uniformity(z: Tensor, t: float = 2.0, chunk_size: int = 1024) -> float:
    """``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` over all ordered pairs of distinct rows."""
    z = as_feature_matrix(z, "z").detach().cpu().double()
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"z needs at least 2 rows, got {n}")
    sq = z.pow(2).sum(dim=1)
    partial = []
    for start in range(0, n, chunk_size):
        block = z[start : start + chunk_size]
        d2 = (sq[start : start + chunk_size, None] + sq[None, :] - 2 * block @ z.T).clamp(min=0)
        logits = -t * d2
        rows = torch.arange(block.shape[0])
        logits[rows, rows + start] = -math.inf
        partial.append(torch.logsumexp(logits.flatten(), dim=0))
    return float(torch.logsumexp(torch.stack(partial), dim=0) - math.log(n * (n - 1)))


def kmeans(
    x: Tensor, num_clusters: int, num_iters: int = 20, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with seeded k-means++ initialisation, in float64 on the CPU.

    The one k-means of the package, :func:`~cld_lightning.cld.kmeans.batch_kmeans`, with the
    selection options: k-means++ seeding from a seeded random first row, an empty cluster keeps
    its previous centroid, ``num_iters`` updates after the initial assignment (a converged
    partition is a fixed point, so further steps change nothing). Returns ``(labels [N],
    centroids [num_clusters, D])``, the centroids being the means of the final clusters;
    ``num_clusters`` is clipped to ``N``.
    """
    xc = x.detach().cpu().double()
    k = min(num_clusters, xc.shape[0])
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(xc.shape[0], generator=gen)  # k-means++ starts from (shuffled) row 0
    labels, centroids = batch_kmeans(
        xc[order], k, num_iters + 1, init="kmeans++", generator=gen, empty="keep"
    )
    return labels[torch.argsort(order)], centroids


def group_agreement(
    z1: Tensor, z2: Tensor, num_clusters: int = 10, num_iters: int = 20, seed: int = 0
) -> tuple[float, Tensor, Tensor]:
    """Symmetric cross-view group accuracy in percent, plus each view's k-means labels."""
    z1, z2 = _pair(z1, z2)
    labels1, cent1 = kmeans(z1, num_clusters, num_iters, seed)
    labels2, cent2 = kmeans(z2, num_clusters, num_iters, seed)
    hit12 = ((z1 @ cent2.T).argmax(dim=1) == labels2).double().mean()
    hit21 = ((z2 @ cent1.T).argmax(dim=1) == labels1).double().mean()
    return float(50.0 * (hit12 + hit21)), labels1, labels2


def _ami(labels1: Tensor, labels2: Tensor) -> float:
    if importlib.util.find_spec("sklearn") is None:
        return float("nan")
    from sklearn.metrics import adjusted_mutual_info_score  # lazy: optional dependency

    return float(adjusted_mutual_info_score(labels1.numpy(), labels2.numpy()))


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): ``exp(-sum p_k log p_k)``, ``p = σ / ||σ||_1 + eps`` over the
    singular values ``σ`` of ``z [N, D]``; between 1 (rank one) and ``min(N, D)``."""
    z = as_feature_matrix(z, "z").detach().cpu().double()
    sigma = torch.linalg.svdvals(z)
    p = sigma / sigma.sum().clamp(min=1e-300) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def alpha_req(z: Tensor, fit_fraction: float = 0.5) -> float:
    """α-ReQ's α (Agrawal et al. 2022): minus the slope of ``log λ_i`` against ``log i`` over the
    leading ``fit_fraction`` of the non-zero eigenvalues ``λ`` of the centred covariance of ``z``."""
    z = as_feature_matrix(z, "z").detach().cpu().double()
    z = z - z.mean(dim=0, keepdim=True)
    eig = torch.linalg.svdvals(z).pow(2) / max(1, z.shape[0] - 1)
    eig = eig[eig > eig[0] * 1e-12] if eig.numel() and eig[0] > 0 else eig[:0]
    n = max(2, int(round(fit_fraction * eig.numel())))
    if eig.numel() < 2:
        return float("nan")
    x = torch.arange(1, n + 1, dtype=torch.float64).log()
    y = eig[:n].log()
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).pow(2).sum()
    return float(-slope)


def label_free_metrics(
    z1: Tensor,
    z2: Tensor,
    num_clusters: int = 10,
    normalize: bool = True,
    score: str = "retrieval",
    num_iters: int = 20,
    seed: int = 0,
    features: tuple[Tensor, Tensor] | None = None,
    lidar_views: tuple[Sequence[Tensor], Sequence[Tensor] | None] | None = None,
) -> dict[str, float]:
    """All label-free metrics of two views' embeddings ``[N, D]`` (see the module docstring).

    Args:
        z1, z2: embeddings of view 1 and view 2 of the same ``N`` held-out images, row-aligned.
        num_clusters: k of the k-means behind ``group_agreement`` / ``group_ami`` (clipped to N).
        normalize: L2-normalise the embeddings first (the metrics are defined on the sphere).
        score: what ``label_free_score`` is: ``"retrieval"`` (default) = ``retrieval_top1``;
            ``"align_uniform"`` = ``-(alignment + uniformity)``; ``"group"`` = ``group_agreement``;
            ``"rankme"`` / ``"rankme_feature"`` = RankMe of the embedding / of ``features``;
            ``"alpha_req"`` = ``-|α - 1|`` of ``features``; ``"lidar"`` / ``"lidar_feature"`` =
            LiDAR of the embedding / of the features.
        num_iters, seed: k-means iterations and k-means++ seed.
        features: the backbone features ``(f1, f2)`` of the same two views (optional; needed by
            the ``*_feature`` and ``alpha_req`` scores).
        lidar_views: ``(embeddings, features)`` of ``q >= 2`` views of the same images (lists of
            row-aligned ``[N, D]``; features may be None) for LiDAR; default ``q = 2``:
            ``(z1, z2)`` and ``features``. Embeddings are L2-normalised as ``z1, z2`` are.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    num_clusters = check_positive_int(num_clusters, "num_clusters")
    z1, z2 = _pair(z1, z2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    agree, labels1, labels2 = group_agreement(z1, z2, num_clusters, num_iters, seed)
    metrics = {
        "retrieval_top1": retrieval_accuracy(z1, z2),
        "alignment": alignment(z1, z2),
        "uniformity": 0.5 * (uniformity(z1) + uniformity(z2)),
        "group_agreement": agree,
        "group_ami": _ami(labels1, labels2),
        "rankme": rankme(torch.cat([z1, z2])),
    }
    zs, fs = lidar_views if lidar_views is not None else ((z1, z2), features)
    if lidar_views is not None and normalize:
        zs = [F.normalize(as_feature_matrix(z, "lidar_views").double(), dim=1) for z in zs]
    metrics["lidar"] = lidar(list(zs))
    if features is not None:
        f1, f2 = _pair(*features)
        if f1.shape[0] != z1.shape[0]:
            raise ValueError(
                f"features hold {f1.shape[0]} rows, the embeddings {z1.shape[0]}: same images needed"
            )
        stacked = torch.cat([f1, f2])
        metrics["rankme_feature"] = rankme(stacked)
        metrics["alpha_req_feature"] = alpha_req(stacked)
        metrics["lidar_feature"] = lidar(list(fs) if fs is not None else [f1, f2])
    elif score in FEATURE_SCORES:
        raise ValueError(f"score={score!r} needs the backbone features (features=(f1, f2))")
    metrics["label_free_score"] = score_of(metrics, score)
    return metrics


def score_of(metrics: dict[str, float], score: str) -> float:
    """The scalar to maximise for ``score`` from a dict of label-free metrics (bare or
    ``selection/``-prefixed keys, as in ``metrics.json``); NaN when a needed metric is missing."""

    def get(name: str) -> float:
        value = metrics.get(name, metrics.get(f"selection/{name}"))
        return float("nan") if value is None else float(value)

    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if score == "retrieval":
        return get("retrieval_top1")
    if score == "align_uniform":
        return -(get("alignment") + get("uniformity"))
    if score == "group":
        return get("group_agreement")
    if score == "alpha_req":
        return -abs(get("alpha_req_feature") - 1.0)
    return get(score)
