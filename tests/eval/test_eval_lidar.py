"""LiDAR: hand-computed LDA spectra, the ridge, linear invariance and the selection wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cld_lightning.eval import label_free_metrics
from cld_lightning.eval.lidar import DELTA, lidar, lidar_eigenvalues
from cld_lightning.eval.selection import rankme, score_of


def _effective_rank(values: list[float], eps: float = 1e-7) -> float:
    total = sum(values)
    p = [v / total + eps for v in values]
    return math.exp(-sum(x * math.log(x) for x in p))


def _isotropic_case(a: float, b: float, c: float) -> torch.Tensor:
    """4 images with means (±a, 0), (0, ±b); 4 views each at offsets (±c, 0), (0, ±c)."""
    means = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]])
    offsets = torch.tensor([[c, 0.0], [-c, 0.0], [0.0, c], [0.0, -c]])
    return means[:, None, :] + offsets[None, :, :]


def test_isotropic_within_class_reduces_to_the_rank_of_sigma_b() -> None:
    # Σ_b = diag(a²/2, b²/2) = diag(2, 0.5); Σ_w = (c²/2 + δ) I = 0.1251 I
    views = _isotropic_case(2.0, 1.0, 0.5)
    lam = lidar_eigenvalues(views)
    assert lam.tolist() == pytest.approx([2.0 / (0.125 + DELTA), 0.5 / (0.125 + DELTA)], rel=1e-12)
    # p = (0.8, 0.2): exp(H) = 1.6494
    assert lidar(views) == pytest.approx(_effective_rank([0.8, 0.2]), rel=1e-9)
    assert lidar(views) == pytest.approx(1.649385, abs=1e-6)
    assert lidar(_isotropic_case(1.0, 1.0, 0.5)) == pytest.approx(2.0, abs=1e-5)


def test_identical_views_leave_only_the_ridge() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(50, 3, generator=gen) * torch.tensor([3.0, 1.0, 0.2])
    views = torch.stack([z, z, z], dim=1)  # Σ_w = 0 + δ I
    centred = z.double() - z.double().mean(dim=0)
    eig_b = torch.linalg.eigvalsh(centred.T @ centred / 50).flip(0)
    assert lidar_eigenvalues(views).tolist() == pytest.approx((eig_b / DELTA).tolist(), rel=1e-9)
    assert lidar(views) == pytest.approx(_effective_rank(eig_b.tolist()), rel=1e-9)
    # the same with a larger ridge: every eigenvalue shrinks by the same factor, the rank stays
    assert lidar(views, delta=1.0) == pytest.approx(lidar(views), rel=1e-9)


def test_invariant_to_an_invertible_linear_map() -> None:
    gen = torch.Generator().manual_seed(1)
    n, q, d = 300, 4, 6
    content = torch.randn(n, 1, d, generator=gen) * torch.linspace(2.0, 0.3, d)
    views = content + 0.5 * torch.randn(n, q, d, generator=gen)
    a = torch.randn(d, d, generator=gen) + 3 * torch.eye(d)  # well-conditioned, invertible
    mapped = views @ a.T
    base = lidar(views)
    assert 1.5 < base < d
    assert lidar(mapped) == pytest.approx(base, rel=1e-3)
    # RankMe, a plain effective rank, is not invariant (the check above can fail)
    flat, flat_mapped = views.reshape(-1, d), mapped.reshape(-1, d)
    assert abs(rankme(flat_mapped) - rankme(flat)) > 0.05


def test_augmentation_only_directions_do_not_count() -> None:
    # 4 directions carry the image (equal across views), 28 only per-view noise: the LDA rank
    # is ~4, while RankMe counts every direction
    gen = torch.Generator().manual_seed(2)
    n, q = 500, 2
    content = torch.randn(n, 1, 4, generator=gen).expand(n, q, 4)
    noise = torch.randn(n, q, 28, generator=gen)
    views = torch.cat([content, noise], dim=2)
    assert lidar(views) == pytest.approx(4.0, abs=0.1)
    assert rankme(views.reshape(n * q, 32)) > 20


def test_unrelated_views_score_near_the_dimension() -> None:
    # the documented way to game it: views that share nothing give Σ_lidar ≈ I / (q - 1)
    noise = torch.randn(500, 2, 32, generator=torch.Generator().manual_seed(5))
    assert 0.85 * 32 < lidar(noise) <= 32


def test_collapse_scores_one_and_sequence_input_matches() -> None:
    assert lidar(torch.ones(10, 3, 5)) == pytest.approx(1.0, abs=1e-4)
    views = _isotropic_case(2.0, 1.0, 0.5)
    as_list = [views[:, j] for j in range(views.shape[1])]
    assert lidar(as_list) == lidar(views)


@pytest.mark.parametrize(
    ("views", "match"),
    [
        (torch.zeros(5, 1, 3), "q >= 2"),
        (torch.zeros(1, 3, 3), "n >= 2"),
        (torch.zeros(5, 3), r"\[n, q, D\]"),
        ([torch.zeros(5, 3), torch.zeros(4, 3)], "same shape"),
        (torch.full((4, 2, 3), float("nan")), "NaN"),
    ],
)
def test_bad_input_one_line(views, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lidar(views)


def test_delta_must_be_positive() -> None:
    with pytest.raises(ValueError, match="delta must be > 0"):
        lidar(torch.zeros(4, 2, 3), delta=0.0)


def test_label_free_metrics_report_lidar_on_both_outputs() -> None:
    gen = torch.Generator().manual_seed(3)
    z1 = torch.randn(64, 8, generator=gen)
    z2 = z1 + 0.3 * torch.randn(64, 8, generator=gen)
    f1 = torch.randn(64, 12, generator=gen)
    f2 = f1 + 0.3 * torch.randn(64, 12, generator=gen)
    m = label_free_metrics(z1, z2, num_clusters=4, features=(f1, f2), score="lidar")
    assert m["lidar"] == pytest.approx(lidar([F.normalize(z1, dim=1), F.normalize(z2, dim=1)]))
    assert m["lidar_feature"] == pytest.approx(lidar([f1, f2]))
    assert m["label_free_score"] == m["lidar"]
    m = label_free_metrics(z1, z2, num_clusters=4, features=(f1, f2), score="lidar_feature")
    assert m["label_free_score"] == m["lidar_feature"]
    assert score_of({"selection/lidar": 7.5}, "lidar") == 7.5
    with pytest.raises(ValueError, match="needs the backbone features"):
        label_free_metrics(z1, z2, num_clusters=4, score="lidar_feature")


def test_label_free_metrics_take_q_views_for_lidar() -> None:
    gen = torch.Generator().manual_seed(4)
    content = torch.randn(64, 1, 8, generator=gen)
    views = content + 0.3 * torch.randn(64, 4, 8, generator=gen)
    zs = [views[:, j] for j in range(4)]
    m = label_free_metrics(zs[0], zs[1], num_clusters=4, lidar_views=(zs, None))
    assert m["lidar"] == pytest.approx(lidar([F.normalize(z, dim=1) for z in zs]))
    pair = label_free_metrics(zs[0], zs[1], num_clusters=4)
    assert pair["lidar"] != pytest.approx(m["lidar"])  # q = 4 is another estimate than q = 2
    assert pair["retrieval_top1"] == m["retrieval_top1"]  # the other scores use views 1 and 2
