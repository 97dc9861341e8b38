"""Label-free selection metrics: hand-computed values and aligned-versus-random ordering."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cld_lightning.eval import label_free_metrics
from cld_lightning.eval.selection import (
    alignment,
    alpha_req,
    group_agreement,
    kmeans,
    rankme,
    retrieval_accuracy,
    score_of,
    uniformity,
)

Z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
Z2 = torch.tensor([[0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]])


def test_retrieval_hand_computed():
    # row 0: cosines (0.6, 1, -1) -> nearest is row 1 (miss); row 1: (0.8, 0, 0) -> row 0 (miss);
    # row 2: (-0.6, -1, 1) -> row 2 (hit).
    assert retrieval_accuracy(Z1, Z2) == pytest.approx(100 / 3)
    assert retrieval_accuracy(Z1, Z2, chunk_size=1) == pytest.approx(100 / 3)
    assert retrieval_accuracy(Z1, Z1) == 100.0


def test_retrieval_ties_are_misses():
    z = torch.ones(5, 3)
    assert retrieval_accuracy(z, z) == 0.0


def test_alignment_hand_computed():
    # squared distances 0.4^2 + 0.8^2 = 0.8, 1 + 1 = 2, 0
    assert alignment(Z1, Z2) == pytest.approx(2.8 / 3)


def test_uniformity_hand_computed():
    # pairwise squared distances of Z1: 2, 4, 2
    expected = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert uniformity(Z1) == pytest.approx(expected)
    assert uniformity(Z1, chunk_size=1) == pytest.approx(expected)


def test_metrics_dict_on_tiny_case():
    m = label_free_metrics(Z1, Z2, num_clusters=2)
    assert m["retrieval_top1"] == pytest.approx(100 / 3)
    assert m["alignment"] == pytest.approx(2.8 / 3)
    assert m["label_free_score"] == m["retrieval_top1"]
    assert set(m) == {
        "retrieval_top1",
        "alignment",
        "uniformity",
        "group_agreement",
        "group_ami",
        "rankme",
        "lidar",
        "label_free_score",
    }


def views(seed, n=200, dim=32, noise=0.05):
    """View 1 has 8 loose groups (as trained embeddings do); view 2 is aligned or random."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(8, dim, generator=gen), dim=1)
    z1 = centres[torch.arange(n) % 8] + 0.1 * torch.randn(n, dim, generator=gen)
    z1 = F.normalize(z1, dim=1)
    aligned = F.normalize(z1 + noise * torch.randn(n, dim, generator=gen), dim=1)
    random = F.normalize(torch.randn(n, dim, generator=gen), dim=1)
    return z1, aligned, random


@pytest.mark.parametrize("score", ["retrieval", "align_uniform", "group"])
def test_aligned_views_beat_random_views(score):
    z1, aligned, random = views(0)
    good = label_free_metrics(z1, aligned, num_clusters=8, score=score)
    bad = label_free_metrics(z1, random, num_clusters=8, score=score)
    assert good["retrieval_top1"] > 95.0 and bad["retrieval_top1"] < 5.0
    assert good["alignment"] < 0.1 < 1.5 < bad["alignment"]
    assert good["group_agreement"] > 80.0 > 40.0 > bad["group_agreement"]
    if not math.isnan(good["group_ami"]):
        assert good["group_ami"] > 0.5 > 0.1 > bad["group_ami"]
    assert good["label_free_score"] > bad["label_free_score"]


def test_collapse_games_alignment_but_not_retrieval():
    z1, _, random = views(1)
    collapsed1 = F.normalize(torch.ones(200, 32) + 0.01 * z1, dim=1)
    collapsed2 = F.normalize(torch.ones(200, 32) + 0.01 * random, dim=1)
    assert uniformity(collapsed1) > -0.01  # ~log(1): everything at one point
    assert uniformity(z1) < -2.0
    collapsed = label_free_metrics(collapsed1, collapsed2, num_clusters=8)
    good = label_free_metrics(*views(1)[:2], num_clusters=8)
    assert collapsed["alignment"] < 1e-3 < good["alignment"]  # collapse "wins" on alignment
    assert collapsed["retrieval_top1"] < 5.0 < 95.0 < good["retrieval_top1"]
    assert collapsed["label_free_score"] < good["label_free_score"]


def test_kmeans_recovers_blobs():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    truth = torch.arange(90) % 3
    x = centres[truth] + 0.1 * torch.randn(90, 2, generator=gen)
    labels, cents = kmeans(x, 3, seed=0)
    # same partition up to a relabelling
    mapping = {int(t): int(lab) for t, lab in zip(truth, labels, strict=True)}
    assert len(set(mapping.values())) == 3
    assert torch.equal(labels, torch.tensor([mapping[int(t)] for t in truth]))
    agree, _, _ = group_agreement(x, x + 0.01, num_clusters=3)
    assert agree == 100.0


def test_selection_kmeans_is_batch_kmeans_with_its_options():
    """One k-means: the selection's is ``batch_kmeans`` (k-means++ from a seeded random first
    row, empty clusters keep their centroid, ``num_iters`` updates), in float64."""
    from cld_lightning.cld.kmeans import batch_kmeans

    x = views(2, n=60)[0]
    labels, cents = kmeans(x, 7, num_iters=3, seed=5)
    gen = torch.Generator().manual_seed(5)
    order = torch.randperm(60, generator=gen)
    ref_labels, ref_cents = batch_kmeans(
        x.double()[order], 7, 4, init="kmeans++", generator=gen, empty="keep"
    )
    assert cents.dtype == torch.float64
    assert torch.equal(labels[order], ref_labels)
    assert torch.equal(cents, ref_cents)
    # centroids are the means of the returned clusters
    for c in range(7):
        members = x.double()[labels == c]
        if len(members):
            torch.testing.assert_close(cents[c], members.mean(dim=0))
    assert kmeans(x, 100, seed=0)[1].shape == (60, 32)  # k clipped to N


def test_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        label_free_metrics(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        label_free_metrics(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="score"):
        label_free_metrics(Z1, Z2, score="knn")
    with pytest.raises(ValueError, match="num_clusters"):
        label_free_metrics(Z1, Z2, num_clusters=0)


def test_rankme_hand_computed():
    # singular values 3, 1 -> p = (0.75, 0.25) (+1e-7): exp(-(0.75 ln 0.75 + 0.25 ln 0.25))
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert rankme(z) == pytest.approx(expected, rel=1e-5)
    assert rankme(torch.eye(16)) == pytest.approx(16.0, rel=1e-4)  # full rank, equal spectrum
    rank_one = torch.ones(50, 8) * torch.arange(1.0, 51.0)[:, None]
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-3)  # collapse scores 1


def test_alpha_req_recovers_a_power_law():
    # columns scaled so the covariance eigenvalues decay as i^-2 (alpha = 2) and i^-1
    gen = torch.Generator().manual_seed(0)
    white = torch.linalg.qr(torch.randn(4000, 64, dtype=torch.float64, generator=gen))[0]
    white = white * math.sqrt(3999)  # orthonormal columns, unit variance, zero-ish mean
    white = white - white.mean(0)
    i = torch.arange(1, 65, dtype=torch.float64)
    assert alpha_req(white * i.pow(-1.0)) == pytest.approx(2.0, abs=0.05)
    assert alpha_req(white * i.pow(-0.5)) == pytest.approx(1.0, abs=0.05)


def test_features_add_feature_scores_and_scores_read_metrics_json():
    z1, aligned, _ = views(2)
    gen = torch.Generator().manual_seed(3)
    f1, f2 = torch.randn(200, 40, generator=gen), torch.randn(200, 40, generator=gen)
    m = label_free_metrics(z1, aligned, num_clusters=8, features=(f1, f2), score="rankme_feature")
    assert m["rankme_feature"] == pytest.approx(rankme(torch.cat([f1, f2]).double()))
    assert m["label_free_score"] == m["rankme_feature"]
    prefixed = {f"selection/{k}": v for k, v in m.items()}
    assert score_of(prefixed, "alpha_req") == pytest.approx(-abs(m["alpha_req_feature"] - 1))
    assert score_of(prefixed, "align_uniform") == pytest.approx(-(m["alignment"] + m["uniformity"]))
    assert math.isnan(score_of({}, "rankme"))
    with pytest.raises(ValueError, match="needs the backbone features"):
        label_free_metrics(z1, aligned, score="rankme_feature")
    with pytest.raises(ValueError, match="same images"):
        label_free_metrics(z1, aligned, features=(f1[:10], f2[:10]))
