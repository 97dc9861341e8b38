"""The README's mixin example (examples/simclr_with_cld.py) runs in both Lightning namespaces and
its loss is SimCLR's NT-Xent plus exactly λ·L_CLD."""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cld_lightning.cld import cross_level_loss

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simclr_with_cld.py"


def load_example():
    spec = importlib.util.spec_from_file_location("simclr_with_cld", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_nt_xent_matches_hand_written_reference() -> None:
    ex = load_example()
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        others = [math.exp(float(z[i] @ z[j]) / 0.5) for j in range(6) if j != i]
        total += -math.log(math.exp(float(z[i] @ z[partner]) / 0.5) / sum(others))
    assert ex.nt_xent(z1, z2, 0.5).item() == pytest.approx(total / 6, rel=1e-5)


def test_loss_adds_exactly_lambda_lcld() -> None:
    ex = load_example()
    torch.manual_seed(0)
    model = ex.SimCLRWithCLD(cld_weight=0.7)
    (x1, x2), _ = next(iter(torch.utils.data.DataLoader(ex.RandomPairs(), batch_size=16)))
    loss = model.training_step(((x1, x2), None), 0)
    f1, f2 = model.backbone(x1), model.backbone(x2)
    simclr = ex.nt_xent(model.projector(f1), model.projector(f2))
    g1, g2 = (F.normalize(model.group_head(f), dim=1) for f in (f1, f2))
    torch.testing.assert_close(loss, simclr + 0.7 * cross_level_loss(g1, g2, 4, 0.2, 5))
    loss.backward()
    assert model.group_head.weight.grad.abs().sum() > 0
    assert model.backbone[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ns", ["pytorch_lightning", "lightning.pytorch"])
def test_example_trains_a_few_steps(ns: str, capsys) -> None:
    lightning = pytest.importorskip(ns)
    ex = load_example()
    torch.manual_seed(0)
    model = ex.main(max_steps=3, lightning=lightning)
    assert len(model.history) == 3
    for h in model.history:
        assert h["cld"] > 0
        assert h["loss"] == pytest.approx(h["simclr"] + h["weight"] * h["cld"], rel=1e-5)
    assert "group_head.weight" in model.state_dict()
    assert "λ·L_CLD" in capsys.readouterr().out
