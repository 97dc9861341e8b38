"""Weighted kNN against a brute-force per-sample reference, hand-made cases and input checks;
the class-balanced protocol and the one kNN report (``knn_report``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import clustered_features

from cld_lightning.eval import KnnOptions, knn_accuracy, knn_report, weighted_knn
from cld_lightning.eval.knn import class_balance_weights, knn_predictions, resolve_backend
from cld_lightning.eval.knn_summary import knn_summary_lines


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


@pytest.mark.parametrize("k", [1, 5, 20, 150, 1000])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 5.0])
def test_matches_brute_force(k, temperature):
    xtr, ytr, xte, _, c = clustered_features(seed=k)
    expected, margin = brute_force_knn(xtr, ytr, xte, c, k, temperature)
    assert margin > 1e-4, "test data must be free of vote ties"
    pred = weighted_knn(xtr, ytr, xte, c, k=k, temperature=temperature, backend="torch")
    assert pred.dtype == torch.long
    assert torch.equal(pred, expected)


def test_faiss_backend_matches_torch_and_reference():
    pytest.importorskip("faiss")
    xtr, ytr, xte, _, c = clustered_features(seed=3, n_train=300, n_test=60)
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
    xtr, ytr, xte, _, c = clustered_features(seed=11)
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
    xtr, ytr, xte, _, c = clustered_features(seed=5)
    nearest = ytr[(xte @ xtr.T).argmax(dim=1)]
    pred = weighted_knn(xtr, ytr, xte, c, k=50, temperature=1e-4)
    assert torch.equal(pred, nearest)


def test_normalize_option():
    xtr, ytr, xte, _, c = clustered_features(seed=8)
    scaled_tr = xtr * torch.rand(xtr.shape[0], 1) * 10 + 0.1 * xtr
    expected = weighted_knn(xtr, ytr, xte, c, k=10)
    assert torch.equal(weighted_knn(scaled_tr, ytr, 3 * xte, c, k=10, normalize=True), expected)


def test_knn_accuracy_and_per_class():
    xtr, ytr, xte, yte, c = clustered_features(seed=2)
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
    xtr, ytr, _, _, c = clustered_features(seed=1)
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


def test_knn_options_validate_each_setting_and_are_what_every_entry_point_passes():
    """One bundle of kNN settings (``KnnOptions``): each bad value names its field, unknown
    keyword settings are named, and the keyword form of each entry point equals the options."""
    import dataclasses

    for bad, name in (
        ({"k": 0}, "k"),
        ({"k": True}, "k"),
        ({"temperature": 0.0}, "temperature"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"backend": "annoy"}, "backend"),
    ):
        with pytest.raises(ValueError, match=name):
            KnnOptions(**bad)
    opts = KnnOptions(k=7, temperature=1, chunk_size=3, backend="torch")
    assert (opts.k, opts.temperature, opts.chunk_size, opts.normalize) == (7, 1.0, 3, True)
    assert isinstance(opts.temperature, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.k = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="chunksize"):
        KnnOptions.of(7, chunksize=3)
    xtr, ytr, xte, yte, c = clustered_features(seed=4)
    pred = knn_predictions(xtr, ytr, xte, c, opts)[0]
    assert torch.equal(
        pred, weighted_knn(xtr, ytr, xte, c, k=7, temperature=1.0, chunk_size=3, backend="torch")
    )
    top1 = 100.0 * float((pred == yte).double().mean())
    assert knn_accuracy(xtr, ytr, xte, yte, c, 7, 1.0, chunk_size=3, backend="torch") == top1
    report = knn_report(xtr, ytr, xte, yte, c, 7, 1.0, chunk_size=3, backend="torch")
    assert report["knn/top1"] == pytest.approx(top1, abs=1e-4)
    with pytest.raises(TypeError, match="chunksize"):
        knn_report(xtr, ytr, xte, yte, c, chunksize=3)


def test_knn_accuracy_length_mismatch():
    xtr, ytr, xte, yte, c = clustered_features(seed=2)
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
    xtr, ytr, xte, _, c = clustered_features(seed=9)
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


# ----------------------------------------------------------------- class-balanced protocol, report
def skewed_problem():
    """Six classes, memory counts 200/150/50/30/10/5 (paper shot split: many {0, 1}, medium
    {2, 3}, few {4, 5}); each class's memory images sit at one point. The few-shot classes 4 and
    5 sit at cosine 0.95 from the head classes 0 and 1: a rare-class query has its own images as
    nearest neighbours (cosine 1), but with k = 100 the head class fills the rest of the top k.
    Two test queries per class, at the class's point."""
    counts = [200, 150, 50, 30, 10, 5]
    eye = torch.eye(8)
    r = math.sqrt(1 - 0.95**2)
    points = torch.stack(
        [eye[0], eye[1], eye[2], eye[3], 0.95 * eye[0] + r * eye[4], 0.95 * eye[1] + r * eye[5]]
    )
    mem_y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    test_y = torch.arange(6).repeat_interleave(2)
    return points[mem_y], mem_y, points[test_y], test_y, counts


def test_plain_protocol_predicts_no_rare_class_and_balanced_does():
    mem_x, mem_y, test_x, test_y, _ = skewed_problem()
    # query of class 4, sigma 0.1, votes shifted by the top cosine 1: class 4 gets 10 e^0 = 10,
    # class 0 gets 90 e^-0.5 = 54.6 -> 0. Balanced (x n_max / n_c): 10 x 20 = 200 vs 54.6 x 1.
    # Class 5: 5 e^0 = 5 vs 95 e^-0.5 = 57.6 -> 1; balanced 5 x 40 = 200 vs 57.6 x 4/3 = 76.8.
    plain = weighted_knn(mem_x, mem_y, test_x, 6, k=100, temperature=0.1)
    balanced = weighted_knn(mem_x, mem_y, test_x, 6, k=100, temperature=0.1, balanced=True)
    assert plain.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1]
    assert balanced.tolist() == test_y.tolist()

    report = knn_report(mem_x, mem_y, test_x, test_y, 6, k=100, temperature=0.1)
    assert report == {
        "knn/top1": pytest.approx(100 * 8 / 12),
        "knn/balanced_top1": 100.0,
        "knn/mean_class_top1": pytest.approx(100 * 4 / 6),
        "knn/balanced_mean_class_top1": 100.0,
        "knn/many": 100.0,
        "knn/medium": 100.0,
        "knn/few": 0.0,
        "knn/balanced_many": 100.0,
        "knn/balanced_medium": 100.0,
        "knn/balanced_few": 100.0,
        "knn/shot_rule_paper": 1.0,  # 200 ... 5 images: paper thresholds, 2 classes a group
        "knn/shot_classes_many": 2.0,
        "knn/shot_classes_medium": 2.0,
        "knn/shot_classes_few": 2.0,
    }
    # the same report under another prefix (the baselines' keys); the memory's groups unprefixed
    pixel = knn_report(mem_x, mem_y, test_x, test_y, 6, k=100, prefix="knn/pixel_")
    assert pixel["knn/pixel_few"] == 0.0 and pixel["knn/pixel_balanced_few"] == 100.0
    assert pixel["knn/shot_classes_few"] == 2.0 and "knn/top1" not in pixel


def test_class_balance_weights():
    labels = torch.tensor([0, 0, 0, 0, 2, 2, 3])
    assert class_balance_weights(labels, 4).tolist() == [1.0, 0.0, 2.0, 4.0]  # class 1 absent
    assert class_balance_weights(torch.arange(5).repeat(7), 5).tolist() == [1.0] * 5


def test_balanced_protocol_matches_brute_force_with_votes_divided_by_class_count():
    gen = torch.Generator().manual_seed(4)
    counts = [80, 40, 15, 6, 3]
    ytr = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    centres = torch.randn(5, 8, generator=gen)
    xtr = F.normalize(centres[ytr] + 1.5 * torch.randn(len(ytr), 8, generator=gen), dim=1)
    xte = F.normalize(centres.repeat(8, 1) + 1.5 * torch.randn(40, 8, generator=gen), dim=1)
    for k in (5, 30, 144):
        sims = (xte.double() @ xtr.double().T).topk(k, dim=1)
        votes = torch.zeros(40, 5, dtype=torch.float64)
        votes.scatter_add_(1, ytr[sims.indices], (sims.values / 0.1).exp())
        expected = (votes / torch.tensor(counts, dtype=torch.float64)).argmax(dim=1)
        got = weighted_knn(xtr, ytr, xte, 5, k=k, temperature=0.1, balanced=True)
        assert torch.equal(got, expected), k
        assert not torch.equal(got, weighted_knn(xtr, ytr, xte, 5, k=k, temperature=0.1)), k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_protocol_equals_plain_on_a_balanced_memory(seed):
    gen = torch.Generator().manual_seed(seed)
    ytr = torch.arange(5).repeat(30)  # 30 images of each of 5 classes
    xtr = torch.randn(150, 16, generator=gen)
    xte, yte = torch.randn(60, 16, generator=gen), torch.randint(0, 5, (60,), generator=gen)
    for k in (1, 7, 200):
        options = KnnOptions(k=k, temperature=0.07)
        plain, balanced = knn_predictions(xtr, ytr, xte, 5, options, balanced=(False, True))
        assert torch.equal(plain, balanced)
    report = knn_report(xtr, ytr, xte, yte, 5, k=20, long_tail=True)
    for key in ("top1", "mean_class_top1", "many", "medium", "few"):
        if f"knn/{key}" in report:
            assert report[f"knn/balanced_{key}"] == report[f"knn/{key}"], key
    assert report["knn/top1"] == float(
        (weighted_knn(xtr, ytr, xte, 5, k=20) == yte).float().mean() * 100
    )
    # long_tail=None (auto): a balanced memory reports no shot groups
    auto = knn_report(xtr, ytr, xte, yte, 5, k=20)
    assert set(auto) == {
        "knn/top1",
        "knn/balanced_top1",
        "knn/mean_class_top1",
        "knn/balanced_mean_class_top1",
    }


def test_report_drops_unlabelled_memory_images():
    mem_x, mem_y, test_x, test_y, _ = skewed_problem()
    gen = torch.Generator().manual_seed(0)
    # 300 unlabelled images right at the queries' points would outvote everything if they voted
    extra_x = test_x[torch.randint(0, 12, (300,), generator=gen)]
    x, y = torch.cat([mem_x, extra_x]), torch.cat([mem_y, torch.full((300,), -1)])
    assert knn_report(x, y, test_x, test_y, 6, k=100) == knn_report(
        mem_x, mem_y, test_x, test_y, 6, k=100
    )


def test_report_bad_input():
    mem_x, mem_y, test_x, test_y, _ = skewed_problem()
    with pytest.raises(ValueError, match="test_labels"):
        knn_report(mem_x, mem_y, test_x, test_y[:-1], 6)
    with pytest.raises(ValueError, match="at least one row"):
        knn_report(mem_x, mem_y, test_x[:0], test_y[:0], 6)
    with pytest.raises(ValueError, match="test_labels"):
        knn_report(mem_x, mem_y, test_x, test_y + 1, 6)


def test_summary_lines_name_the_rule_and_both_protocols():
    mem_x, mem_y, test_x, test_y, _ = skewed_problem()
    metrics = knn_report(mem_x, mem_y, test_x, test_y, 6, k=100)
    metrics |= knn_report(mem_x, mem_y, test_x, test_y, 6, k=100, prefix="knn/pixel_")
    lines = knn_summary_lines(metrics)
    text = "\n".join(lines)
    assert "class-balanced kNN top-1 (test):     100.00 %" in text
    assert "paper thresholds >100 / 20-100 / <20 images; classes: many 2, medium 2, few 2" in text
    assert "many / medium / few, NPID:           100.00 / 100.00 / 0.00 %" in text
    assert "same, class-balanced:                100.00 / 100.00 / 100.00 %" in text
    assert "class-balanced, raw pixels:          100.00 %" in text
    assert "same, balanced, raw pixels:          100.00 / 100.00 / 100.00 %" in text
    assert knn_summary_lines({"knn/top1": 50.0}) == []


def test_online_validation_logs_the_report():
    """``SSLMethod.on_validation_epoch_end`` logs :func:`knn_report` under ``knn/`` (plus
    ``knn/top1_best``); unlabelled memory images are dropped there too."""
    from cld_lightning.methods import NPID
    from cld_lightning.models import build_backbone

    mem_x, mem_y, test_x, test_y, _ = skewed_problem()
    torch.manual_seed(0)
    model = NPID(build_backbone("small_cnn", 4, 1), 8, {"enabled": False}, num_classes=6, knn_k=100)
    unlabelled = (test_x[:3], torch.full((3,), -1))
    model._knn_store = {0: [(mem_x, mem_y), unlabelled], 1: [(test_x, test_y)]}
    logged: dict[str, float] = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    model.on_validation_epoch_end()
    expected = knn_report(mem_x, mem_y, test_x, test_y, 6, k=100, temperature=0.1)
    assert logged.pop("knn/top1_best") == pytest.approx(expected["knn/top1"])
    assert logged == pytest.approx(expected)
    assert logged["knn/few"] == 0.0 and logged["knn/balanced_few"] == 100.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_report_on_cuda_equals_cpu():
    mem_x, mem_y, test_x, test_y, _ = skewed_problem()
    cpu = knn_report(mem_x, mem_y, test_x, test_y, 6, k=100)
    gpu = knn_report(mem_x.cuda(), mem_y.cuda(), test_x.cuda(), test_y.cuda(), 6, k=100)
    assert gpu == pytest.approx(cpu)
    assert gpu["knn/few"] == 0.0 and gpu["knn/balanced_few"] == 100.0
