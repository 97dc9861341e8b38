"""LiDAR (Thilak et al., ICLR 2024): the effective rank of the LDA matrix of the SSL task.

Each of ``n`` held-out images is a surrogate class; its ``q`` augmented views are the class's
samples. With ``e_ij`` the embedding of view ``j`` of image ``i`` (``[D]``), ``μ_i`` the mean of
image ``i``'s views and ``μ`` the mean of the ``μ_i``::

    Σ_b = 1/n Σ_i (μ_i - μ)(μ_i - μ)^T                       between-class covariance
    Σ_w = 1/(n q) Σ_ij (e_ij - μ_i)(e_ij - μ_i)^T + δ I       within-class covariance + ridge
    Σ_lidar = Σ_w^{-1/2} Σ_b Σ_w^{-1/2}
    LiDAR = exp(-Σ_k p_k log p_k),   p_k = λ_k / ||λ||_1 + ε   (λ: eigenvalues of Σ_lidar)

It is RankMe's effective rank applied to the directions that separate images *relative to* how
much the augmentations move them, so a direction that only carries augmentation noise does not
count. Between 1 and ``min(D, n - 1)`` (up to ``ε``). Without the ridge it is invariant to any
invertible linear map of the features (``Σ_w^{-1} Σ_b`` keeps its eigenvalues); the ridge
breaks this only for directions whose within-class variance is near ``δ``.

Constants used here (stated, since the score depends on them):

- ``δ = 1e-4`` (``delta``): the ridge on ``Σ_w``, the value given for the paper (public
  re-implementations use 1e-6 to 1e-4). It is absolute, not relative to the features' scale:
  on L2-normalised 128-d embeddings whose two views lie at squared distance ~0.5 the mean
  within-class variance per direction is ~1e-3, so δ does damp the weaker directions, and on
  the (unnormalised) backbone feature its weight depends on the feature's scale. Compare runs
  under the same δ only.
- ``ε = 1e-7`` (``eps``): as this package's :func:`~cld_lightning.eval.selection.rankme`.
- ``n``, ``q``: the caller's. ``cld-train`` uses ``n = selection.num_images`` (2000) held-out
  images and ``q = selection.lidar_views`` (default 2: the two views the other label-free scores
  already embed, so LiDAR costs no extra forward pass). The paper uses far more views per image
  (on the order of tens); with ``q = 2`` each ``μ_i`` is the mean of two views, so ``Σ_b`` and
  ``Σ_w`` are noisier estimates.

Cost: ``O(n q D^2 + D^3)`` in float64 on the CPU (two ``D x D`` eigendecompositions); for
``n q = 4000`` and ``D = 512`` well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cld_lightning.eval._checks import as_feature_matrix

DELTA = 1e-4
EPS = 1e-7


def _stack_views(views: Tensor | Sequence[Tensor]) -> Tensor:
    """``[n, q, D]`` float64 CPU tensor from ``[n, q, D]`` or ``q`` row-aligned ``[n, D]``."""
    if isinstance(views, Tensor):
        if views.dim() != 3:
            raise ValueError(
                f"views must be [n, q, D] (or q tensors [n, D]), got {tuple(views.shape)}"
            )
        x = views
    else:
        mats = [as_feature_matrix(v, f"views[{j}]") for j, v in enumerate(views)]
        if len({tuple(m.shape) for m in mats}) > 1:
            shapes = [tuple(m.shape) for m in mats]
            raise ValueError(f"every view must have the same shape [n, D], got {shapes}")
        if not mats:
            raise ValueError("views is empty: LiDAR needs q >= 2 views of each image")
        x = torch.stack(mats, dim=1)
    n, q, _ = x.shape
    if n < 2 or q < 2:
        raise ValueError(f"LiDAR needs n >= 2 images and q >= 2 views each, got n={n}, q={q}")
    x = x.detach().cpu().double()
    if not torch.isfinite(x).all():
        raise ValueError("views hold NaN or infinite values")
    return x


def lidar_eigenvalues(views: Tensor | Sequence[Tensor], delta: float = DELTA) -> Tensor:
    """Eigenvalues (descending, ``>= 0``) of ``Σ_w^{-1/2} Σ_b Σ_w^{-1/2}`` (module docstring)."""
    if not delta > 0:
        raise ValueError(f"delta must be > 0 (the ridge keeps Σ_w invertible), got {delta!r}")
    x = _stack_views(views)
    n, q, d = x.shape
    means = x.mean(dim=1)  # μ_i
    between = means - means.mean(dim=0, keepdim=True)
    sigma_b = between.T @ between / n
    within = (x - means[:, None, :]).reshape(n * q, d)
    sigma_w = within.T @ within / (n * q) + delta * torch.eye(d, dtype=x.dtype)
    w, v = torch.linalg.eigh(sigma_w)
    inv_sqrt = (v * w.clamp(min=delta).rsqrt()) @ v.T
    m = inv_sqrt @ sigma_b @ inv_sqrt
    return torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp(min=0).flip(0)


def lidar(views: Tensor | Sequence[Tensor], delta: float = DELTA, eps: float = EPS) -> float:
    """LiDAR of ``q`` views of ``n`` images: ``[n, q, D]``, or ``q`` row-aligned ``[n, D]`` tensors
    (row ``i`` of each is image ``i``); higher is better. See the module docstring."""
    lam = lidar_eigenvalues(views, delta)
    p = lam / lam.sum().clamp(min=1e-300) + eps
    return float(torch.exp(-(p * p.log()).sum()))
