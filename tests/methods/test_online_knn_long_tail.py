"""Online kNN reports many/medium/few-shot accuracy exactly when the memory set is long-tailed
(``longtail.is_long_tailed``: the one threshold), with the one shot split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cld_lightning.eval import shot_accuracy, weighted_knn
from tests.helpers import make_resnet_npid


def _run_epoch_end(counts: list[int]) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    model = make_resnet_npid(cld=False)
    gen = torch.Generator().manual_seed(0)
    protos = F.normalize(torch.randn(3, model.embed_dim, generator=gen), dim=1)
    mem_y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    mem_z = F.normalize(
        protos[mem_y] + 0.8 * torch.randn(len(mem_y), protos.shape[1], generator=gen), dim=1
    )
    test_y = torch.arange(30) % 3
    test_z = F.normalize(
        protos[test_y] + 0.8 * torch.randn(30, protos.shape[1], generator=gen), dim=1
    )
    model._knn_store = {0: [(mem_z, mem_y)], 1: [(test_z, test_y)]}
    logged: dict[str, float] = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    model.on_validation_epoch_end()
    pred = weighted_knn(mem_z, mem_y, test_z, 3, k=model.knn_k, temperature=0.1)
    return logged, pred, test_y


def test_long_tailed_memory_logs_shot_accuracy() -> None:
    counts = [150, 50, 10]  # many, medium, few; 150 > 3 x 10
    logged, pred, test_y = _run_epoch_end(counts)
    shots = shot_accuracy(pred, test_y, counts)
    assert logged["knn/top1"] == pytest.approx(shots["overall"], abs=1e-4)
    for group in ("many", "medium", "few"):
        assert logged[f"knn/{group}"] == pytest.approx(shots[group], abs=1e-6)


@pytest.mark.parametrize("counts", [[50, 50, 50], [150, 50, 50]])  # balanced; exactly 3x
def test_memory_within_the_ratio_logs_no_shot_accuracy(counts: list[int]) -> None:
    logged, _, _ = _run_epoch_end(counts)
    assert "knn/top1" in logged
    assert not any(k in logged for k in ("knn/many", "knn/medium", "knn/few"))
