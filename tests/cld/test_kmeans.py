import pytest
import torch
import torch.nn.functional as F

from cld_lightning.cld import batch_kmeans, cross_level_loss, cross_level_loss_with_stats
from tests.cld.reference import reference_cld_loss, reference_kmeans


def unit(n: int, d: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


@pytest.mark.parametrize("n,k", [(32, 5), (16, 16), (8, 20), (64, 7)])
def test_kmeans_matches_reference(n: int, k: int) -> None:
    x = unit(n, 6, seed=n + k)
    labels, cent = batch_kmeans(x, k, 5)
    ref_labels, ref_cent = reference_kmeans(x, k, 5)
    assert torch.equal(labels, ref_labels)
    torch.testing.assert_close(cent, ref_cent, atol=1e-12, rtol=0)


def test_k_greater_than_n_each_point_own_cluster_and_zero_centroids() -> None:
    x = unit(6, 4)
    labels, cent = batch_kmeans(x, 10, 5)
    assert labels.tolist() == list(range(6))
    torch.testing.assert_close(cent[:6], x)
    assert torch.count_nonzero(cent[6:]) == 0


def test_k_equals_n_identity() -> None:
    x = unit(9, 5)
    labels, cent = batch_kmeans(x, 9, 5)
    assert labels.tolist() == list(range(9))
    torch.testing.assert_close(cent, x)


def test_empty_cluster_has_zero_centroid() -> None:
    # Rows 0 and 1 coincide, so the first-k init gives two equal centroids; argmin ties go to
    # cluster 0, cluster 1 never gets a member and must stay the zero vector (no 0/0).
    p = torch.tensor([1.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x = torch.stack([p, p, q, q, q])
    labels, cent = batch_kmeans(x, 2, 5)
    ref_labels, ref_cent = reference_kmeans(x, 2, 5)
    assert torch.equal(labels, ref_labels)
    assert labels.tolist() == [0, 0, 0, 0, 0]
    torch.testing.assert_close(cent[0], (2 * p + 3 * q) / 5)
    assert torch.count_nonzero(cent[1]) == 0
    torch.testing.assert_close(cent, ref_cent)
    g = x.clone().requires_grad_()
    loss = cross_level_loss(g, x.flip(0), 2, 0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(g.grad).all()


def test_empty_keep_option_keeps_the_previous_centroid() -> None:
    # The example above with empty="keep" (the label-free selection's option): after the first
    # assignment (all five rows in cluster 0) cluster 1 keeps its centroid p instead of zero, so
    # the p rows move to it on the next assignment: labels [1, 1, 0, 0, 0], centroids (q, p).
    p = torch.tensor([1.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x = torch.stack([p, p, q, q, q])
    labels, cent = batch_kmeans(x, 2, 5, empty="keep")
    assert labels.tolist() == [1, 1, 0, 0, 0]
    torch.testing.assert_close(cent, torch.stack([q, p]))
    labels, cent = batch_kmeans(x, 2, 2, empty="keep")  # one update: c1 kept, c0 the mean
    assert labels.tolist() == [1, 1, 0, 0, 0]
    torch.testing.assert_close(cent, torch.stack([q, p]))
    # k > N: the empty cluster 1 keeps its initial row p, the never-seeded cluster 2 stays zero
    labels, cent = batch_kmeans(x[:2], 3, 1, empty="keep")
    assert labels.tolist() == [0, 0]
    torch.testing.assert_close(cent, torch.stack([p, p, torch.zeros(2, dtype=x.dtype)]))
    with pytest.raises(ValueError, match="empty"):
        batch_kmeans(x, 2, 2, empty="drop")  # type: ignore[arg-type]


def test_centroids_not_renormalised_and_are_means() -> None:
    x = unit(40, 8, seed=3)
    labels, cent = batch_kmeans(x, 4, 5)
    for j in range(4):
        torch.testing.assert_close(cent[j], x[labels == j].mean(0))
    assert (cent.norm(dim=1) < 1 - 1e-6).any()  # means of unit vectors are shorter


def test_identical_inputs_no_nan() -> None:
    x = F.normalize(torch.ones(16, 8), dim=1).requires_grad_()
    labels, cent = batch_kmeans(x, 4, 5)
    assert labels.tolist() == [0] * 16
    loss = cross_level_loss(x, x.detach().clone().requires_grad_(), 4, 0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_gradient_flows_through_centroids() -> None:
    x = unit(12, 4, seed=5).requires_grad_()
    _, cent = batch_kmeans(x, 3, 5)
    cent.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("n,k", [(32, 5), (16, 16), (8, 20), (5, 3)])
def test_loss_and_gradients_match_reference(n: int, k: int) -> None:
    g1 = unit(n, 6, seed=1).requires_grad_()
    g2 = unit(n, 6, seed=2).requires_grad_()
    r1 = g1.detach().clone().requires_grad_()
    r2 = g2.detach().clone().requires_grad_()
    loss = cross_level_loss(g1, g2, k, 0.2, 5)
    ref = reference_cld_loss(r1, r2, k, 0.2, 5)
    loss.backward()
    ref.backward()
    # float64 inputs: the two computations agree to rounding, not merely to float32 precision
    assert abs(loss.item() - ref.item()) < 1e-12
    torch.testing.assert_close(g1.grad, r1.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(g2.grad, r2.grad, atol=1e-12, rtol=0)


def test_hand_computed_two_point_loss() -> None:
    # k=2, N=2: each view's points are their own centroids. logits g1·g2ᵀ/τ with targets [0, 1].
    g1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    g2 = torch.tensor([[0.6, 0.8], [0.8, -0.6]], dtype=torch.float64)
    tau = 0.5
    s = g1 @ g2.t() / tau  # [[1.2, 1.6], [1.6, -1.2]]
    ce12 = -(torch.log_softmax(s, 1)[[0, 1], [0, 1]]).mean()
    s21 = g2 @ g1.t() / tau
    ce21 = -(torch.log_softmax(s21, 1)[[0, 1], [0, 1]]).mean()
    expected = 0.5 * (ce12 + ce21)
    assert abs(cross_level_loss(g1, g2, 2, tau).item() - expected.item()) < 1e-12


def test_group_accuracy_and_sizes() -> None:
    # Two different views: accuracy = how often an instance's nearest *other-view* centroid (by
    # dot product) is its other-view cluster, averaged over both directions; from the reference.
    g1, g2 = unit(20, 4, seed=9), unit(20, 4, seed=10)
    out = cross_level_loss_with_stats(g1, g2, 4, 0.1)
    l1, c1 = reference_kmeans(g1, 4, 5)
    l2, c2 = reference_kmeans(g2, 4, 5)
    assert torch.equal(out.labels[0], l1) and torch.equal(out.labels[1], l2)
    acc12 = ((g1 @ c2.t()).argmax(1) == l2).double().mean()
    acc21 = ((g2 @ c1.t()).argmax(1) == l1).double().mean()
    expected = 0.5 * (acc12 + acc21).item()
    assert 0.0 < expected < 1.0  # a value that a wrong pairing of views or labels would change
    assert out.group_acc.item() == pytest.approx(expected, abs=1e-6)  # a float32 mean of 0/1
    assert out.cluster_sizes[0].tolist() == torch.bincount(l1, minlength=4).tolist()
    assert out.cluster_sizes[1].tolist() == torch.bincount(l2, minlength=4).tolist()
    # identical views of well-separated groups: every instance finds its own group
    centres = torch.eye(4, dtype=torch.float64)
    x = F.normalize(centres.repeat(5, 1) + 0.01 * unit(20, 4, seed=11), dim=1)
    same = cross_level_loss_with_stats(x, x.clone(), 4, 0.1)
    assert same.group_acc.item() == 1.0
    assert same.cluster_sizes[0].tolist() == [5, 5, 5, 5]


def test_detach_centroids_option_changes_gradient() -> None:
    g1 = unit(16, 4, seed=1).requires_grad_()
    g2 = unit(16, 4, seed=2)
    full = torch.autograd.grad(cross_level_loss(g1, g2, 4, 0.2), g1)[0]
    det = torch.autograd.grad(cross_level_loss(g1, g2, 4, 0.2, detach_centroids=True), g1)[0]
    assert not torch.allclose(full, det)


def test_bf16_input_runs_in_fp32() -> None:
    g1 = unit(16, 8, dtype=torch.float32).bfloat16()
    g2 = unit(16, 8, seed=1, dtype=torch.float32).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cross_level_loss_with_stats(g1, g2, 4, 0.2)
    assert out.loss.dtype == torch.float32
    assert out.centroids[0].dtype == torch.float32


def d2_sampling_seeds(x: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    """k-means++ seeding written out: first seed row 0, then each next seed drawn with
    probability proportional to the squared distance to the *nearest* seed chosen so far."""
    chosen = [0]
    for _ in range(1, k):
        d2 = torch.tensor(
            [min(float(((row - x[c]) ** 2).sum()) for c in chosen) for row in x], dtype=x.dtype
        )
        chosen.append(int(torch.multinomial(d2 / d2.sum(), 1, generator=generator).item()))
    return chosen


def test_kmeanspp_seeds_are_d2_sampling() -> None:
    # points at very different distances (radii 0.1 ... 3), so D, D² and "distance to the last
    # seed only" give clearly different draws; 20 generator seeds, 6 seeds each
    radii = torch.linspace(0.1, 3.0, 30, dtype=torch.float64).unsqueeze(1)
    x = unit(30, 5, seed=4) * radii[torch.randperm(30, generator=torch.Generator().manual_seed(5))]
    for seed in range(20):
        seeds = d2_sampling_seeds(x, 6, torch.Generator().manual_seed(seed))
        assert len(set(seeds)) == 6
        # one Lloyd step: labels are the nearest seeds, centroids the means of those clusters
        labels, cent = batch_kmeans(
            x, 6, 1, init="kmeans++", generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(labels, torch.cdist(x, x[seeds]).argmin(dim=1)), seed
        for j in range(6):
            torch.testing.assert_close(cent[j], x[labels == j].mean(0), atol=1e-12, rtol=0)


def test_kmeanspp_second_seed_frequency_follows_squared_distance() -> None:
    # From row 0 at the origin, rows at distance 1 and 3: D² sampling picks the far row with
    # probability 9/10 (D sampling: 3/4, uniform: 1/2). 2000 draws: standard error 0.007.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    far = 0
    for _ in range(2000):
        labels, _ = batch_kmeans(x, 2, 1, init="kmeans++", generator=gen)
        far += int(labels[1].item() == 0)  # row 1 joins row 0's cluster iff row 2 was the seed
    assert abs(far / 2000 - 0.9) < 0.03


def test_spherical_option_normalises_centroids() -> None:
    x = unit(30, 5, seed=4, dtype=torch.float32)
    labels_s, cent_s = batch_kmeans(x, 4, 5, spherical=True)
    nonempty = torch.bincount(labels_s, minlength=4) > 0
    torch.testing.assert_close(cent_s[nonempty].norm(dim=1), torch.ones(int(nonempty.sum())))


@pytest.mark.parametrize("bad", [dict(num_clusters=0), dict(num_iters=0)])
def test_bad_arguments(bad: dict) -> None:
    args = dict(num_clusters=2, num_iters=5) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        batch_kmeans(unit(4, 2), **args)
