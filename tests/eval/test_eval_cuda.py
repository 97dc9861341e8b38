"""CUDA tensors and models give the CPU results (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import clustered_features
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cld_lightning.eval import (
    extract_features,
    knn_accuracy,
    label_free_metrics,
    linear_probe,
    shot_accuracy,
    weighted_knn,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def problem(n_train=3000, n_test=500, dim=128):
    return clustered_features(0, n_train, n_test, dim, num_classes=10, spread=2.0)


def test_knn_cuda_matches_cpu():
    xtr, ytr, xte, yte, c = problem()
    cpu = weighted_knn(xtr, ytr, xte, c, k=200, temperature=0.07, backend="torch")
    gpu = weighted_knn(
        xtr.cuda(),
        ytr.cuda(),
        xte.cuda(),
        c,
        k=200,
        temperature=0.07,
        backend="torch",
        chunk_size=64,
    )
    assert gpu.device.type == "cuda"
    # float32 matmuls differ between devices in the last bits: allow a few near-tie flips
    assert (gpu.cpu() == cpu).double().mean() > 0.99
    mixed = weighted_knn(xtr.cuda(), ytr, xte, c, k=200, temperature=0.07, backend="torch")
    assert mixed.device.type == "cpu"
    acc_gpu = knn_accuracy(xtr.cuda(), ytr.cuda(), xte.cuda(), yte.cuda(), c, k=200)
    acc_cpu = knn_accuracy(xtr, ytr, xte, yte, c, k=200)
    assert abs(acc_gpu - acc_cpu) < 1.0


def test_extract_features_cuda_leaves_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU()).cuda().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(40, 8)
    loader = DataLoader(
        TensorDataset(x, torch.zeros(40, dtype=torch.long), torch.arange(40)), batch_size=16
    )
    feats, _, idx = extract_features(model, loader)
    assert feats.device.type == "cpu" and torch.equal(idx, torch.arange(40))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(feats, model(x.cuda()).cpu(), atol=1e-5)
    model.train()
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)


def test_other_functions_accept_cuda_tensors():
    xtr, ytr, xte, yte, c = problem(n_train=400, n_test=200, dim=16)
    assert linear_probe(xtr.cuda(), ytr.cuda(), xte.cuda(), yte.cuda(), c) > 50.0
    m = label_free_metrics(xte.cuda(), xte.cuda() + 0.01, num_clusters=5)
    assert m["retrieval_top1"] > 95.0
    r = shot_accuracy(yte.cuda(), yte.cuda(), torch.full((c,), 500))
    assert r["many"] == 100.0 and r["overall"] == 100.0
