"""Weighted kNN against a brute-force per-sample reference, hand-made cases and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cld_lightning.eval import knn_accuracy, weighted_knn
from cld_lightning.eval.knn import resolve_backend


def brute_force_knn(train, train_labels, test, num_classes, k, temperature):
    """Python-loop NPID vote in float64; also returns the smallest relative vote margin."""
    train64, test64 = train.double().tolist(), test.double().tolist()
    labels = train_labels.tolist()
    preds, margin = [], math.inf
    for q in test64:
        sims = [sum(a * b for a, b in zip(q, t, strict=True)) for t in train64]
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[: min(k, len(sims))]
        top = sims[order[0]]
        votes = [0.0] * num_classes
        for j in order:
            votes[labels[j]] += math.exp((sims[j] - top) / temperature)
        best = max(range(num_classes), key=lambda c: votes[c])
        runner_up = max(v for c, v in enumerate(votes) if c != best)
        margin = min(margin, (votes[best] - runner_up) / votes[best])
        preds.append(best)
    return torch.tensor(preds), margin


def random_problem(seed, n_train=150, n_test=40, dim=8, num_classes=5):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen)
    ytr = torch.randint(num_classes, (n_train,), generator=gen)
    yte = torch.randint(num_classes, (n_test,), generator=gen)
    xtr = F.normalize(centres[ytr] + 1.5 * torch.randn(n_train, dim, generator=gen), dim=1)
    xte = F.normalize(centres[yte] + 1.5 * torch.randn(n_test, dim, generator=gen), dim=1)
    return xtr, ytr, xte, yte, num_classes


@pytest.mark.parametrize("k", [1, 5, 20, 150, 1000])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 5.0])
def test_matches_brute_force(k, temperature):
    xtr, ytr, xte, _, c = random_problem(seed=k)
    expected, margin = brute_force_knn(xtr, ytr, xte, c, k, temperature)
    assert margin > 1e-4, "test data must be free of vote ties"
    pred = weighted_knn(xtr, ytr, xte, c, k=k, temperature=temperature, backend="torch")
    assert pred.dtype == torch.long
    assert torch.equal(pred, expected)


def test_faiss_backend_matches_torch_and_reference():
    pytest.importorskip("faiss")
    xtr, ytr, xte, _, c = random_problem(seed=3, n_train=300, n_test=60)
    for k, temperature in [(1, 0.1), (10, 0.1), (50, 0.07), (400, 1.0)]:
        expected, margin = brute_force_knn(xtr, ytr, xte, c, k, temperature)
        assert margin > 1e-4
        fa = weighted_knn(
            xtr, ytr, xte, c, k=k, temperature=temperature, backend="faiss", chunk_size=7
        )
        to = weighted_knn(xtr, ytr, xte, c, k=k, temperature=temperature, backend="torch")
        assert torch.equal(fa, expected)
        assert torch.equal(to, expected)


def test_auto_backend_choice():
    assert resolve_backend("auto", 49_999) == "torch"
    assert resolve_backend("torch", 10**7) == "torch"
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert resolve_backend("auto", 50_000) == "torch"
        with pytest.raises(ImportError, match="faiss"):
            resolve_backend("faiss", 10)
    else:
        assert resolve_backend("auto", 50_000) == "faiss"


@pytest.mark.parametrize("chunk_size", [1, 7, 39, 40, 10_000])
def test_chunked_equals_unchunked(chunk_size):
    xtr, ytr, xte, _, c = random_problem(seed=11)
    full = weighted_knn(xtr, ytr, xte, c, k=30, temperature=0.1, chunk_size=10**6)
    assert torch.equal(
        weighted_knn(xtr, ytr, xte, c, k=30, temperature=0.1, chunk_size=chunk_size), full
    )


def test_hand_made_weighting_beats_majority():
    # query (1, 0): class 0 at cosine 0.9, two class-1 neighbours at cosine 0.5 each.
    s = math.sqrt(0.75)
    train = torch.tensor([[0.9, math.sqrt(0.19)], [0.5, s], [0.5, -s]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # sigma 0.1: class 0 gets e^9 = 8103, class 1 gets 2 e^5 = 297 -> 0 (majority would say 1).
    # second query: cosines -0.9 / -0.5 / -0.5 -> e^-9 vs 2 e^-5 -> class 1.
    assert weighted_knn(train, labels, test, 2, k=3, temperature=0.1).tolist() == [0, 1]
    # sigma 10: e^0.09 = 1.09 vs 2 e^0.05 = 2.10 -> the weights no longer dominate: class 1.
    assert weighted_knn(train, labels, test, 2, k=3, temperature=10.0).tolist() == [1, 1]
    # k = 1: only the nearest neighbour votes.
    assert weighted_knn(train, labels, test, 2, k=1, temperature=10.0).tolist() == [0, 1]


def test_tiny_temperature_is_nearest_neighbour_without_overflow():
    xtr, ytr, xte, _, c = random_problem(seed=5)
    nearest = ytr[(xte @ xtr.T).argmax(dim=1)]
    pred = weighted_knn(xtr, ytr, xte, c, k=50, temperature=1e-4)
    assert torch.equal(pred, nearest)


def test_normalize_option():
    xtr, ytr, xte, _, c = random_problem(seed=8)
    scaled_tr = xtr * torch.rand(xtr.shape[0], 1) * 10 + 0.1 * xtr
    expected = weighted_knn(xtr, ytr, xte, c, k=10)
    assert torch.equal(weighted_knn(scaled_tr, ytr, 3 * xte, c, k=10, normalize=True), expected)


def test_knn_accuracy_and_per_class():
    xtr, ytr, xte, yte, c = random_problem(seed=2)
    pred = weighted_knn(xtr, ytr, xte, c, k=20)
    top1 = knn_accuracy(xtr, ytr, xte, yte, c, k=20)
    assert top1 == pytest.approx(100.0 * (pred == yte).double().mean().item())
    yte = yte.clone()
    yte[yte == 4] = 3  # class 4 absent from the test set
    top1, per_class = knn_accuracy(xtr, ytr, xte, yte, c, k=20, per_class=True)
    assert per_class.shape == (c,)
    assert math.isnan(per_class[4].item())
    for cls in range(4):
        mask = yte == cls
        assert per_class[cls].item() == pytest.approx(
            100.0 * (pred[mask] == cls).double().mean().item()
        )


def test_empty_test_set():
    xtr, ytr, _, _, c = random_problem(seed=1)
    assert weighted_knn(xtr, ytr, torch.empty(0, xtr.shape[1]), c).numel() == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"train_labels": torch.zeros(5, dtype=torch.long)}, "train_labels"),
        ({"k": 0}, "k"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"train_labels": torch.full((10,), 3)}, "train_labels"),
        ({"train_labels": -torch.ones(10, dtype=torch.long)}, "train_labels"),
        ({"train_labels": torch.zeros(10)}, "train_labels"),
        ({"test_features": torch.randn(4, 5)}, "feature dimension"),
        ({"train_features": torch.randn(10)}, "train_features"),
        ({"num_classes": 0}, "num_classes"),
        ({"backend": "annoy"}, "backend"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = {
        "train_features": torch.randn(10, 4),
        "train_labels": torch.zeros(10, dtype=torch.long),
        "test_features": torch.randn(3, 4),
        "num_classes": 3,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        weighted_knn(**args)


def test_knn_accuracy_length_mismatch():
    xtr, ytr, xte, yte, c = random_problem(seed=2)
    with pytest.raises(ValueError, match="test_labels"):
        knn_accuracy(xtr, ytr, xte, yte[:-1], c)


def test_unnormalised_features_are_normalised_by_default():
    """A hand-made case where the raw inner product picks the wrong neighbour: the query is at 10°
    from a class-0 point of norm 1 and at 60° from a class-1 point of norm 5."""
    deg = math.pi / 180
    train = torch.tensor([[1.0, 0.0], [5 * math.cos(70 * deg), 5 * math.sin(70 * deg)]])
    test = torch.tensor([[math.cos(10 * deg), math.sin(10 * deg)]])
    labels = torch.tensor([0, 1])
    # the raw inner products: 0.98 for class 0, 2.5 for class 1 (the wrong, farther point)
    assert (test @ train.T).argmax().item() == 1
    assert weighted_knn(train, labels, test, 2, k=1).tolist() == [0]
    assert knn_accuracy(train, labels, test, torch.tensor([0]), 2, k=1) == 100.0


@pytest.mark.parametrize("which", ["train", "test"])
def test_normalize_false_raises_on_unnormalised_features(which):
    xtr, ytr, xte, _, c = random_problem(seed=9)
    expected = weighted_knn(xtr, ytr, xte, c, k=10)
    assert torch.equal(weighted_knn(xtr, ytr, xte, c, k=10, normalize=False), expected)
    if which == "train":
        xtr = xtr.clone()
        xtr[7] *= 1.5
    else:
        xte = xte * 0.5
    norm = "1.5" if which == "train" else "0.5"
    with pytest.raises(ValueError, match=rf"{which}_features must be L2-normalised.*norm {norm}\b"):
        weighted_knn(xtr, ytr, xte, c, k=10, normalize=False)
