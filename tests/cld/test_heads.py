import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cld_lightning.cld import NormLinear, build_head


def test_normlinear_is_normalised_cosine_projection() -> None:
    torch.manual_seed(0)
    layer = NormLinear(5, 3)
    torch.testing.assert_close(layer.weight.norm(dim=0), torch.ones(3))  # unit columns at init
    assert layer.weight.abs().max() <= 1.0
    x = torch.randn(4, 5)
    cos = F.normalize(x, dim=1) @ F.normalize(layer.weight, dim=0)
    expected = cos / cos.norm(dim=1, keepdim=True)
    torch.testing.assert_close(layer(x), expected)
    # scale invariance in x and in the weight columns
    torch.testing.assert_close(layer(3.0 * x), layer(x))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in layer.modules())
    assert sum(p.numel() for p in layer.parameters()) == 15  # no bias


@pytest.mark.parametrize(
    "kind,n_params",
    [
        ("linear", 8 * 4 + 4),
        ("normlinear", 8 * 4),
        ("mlp", 8 * 8 + 8 + 8 * 4 + 4),
        ("normmlp", 8 * 8 + 8 + 8 * 4),
    ],
)
def test_head_kinds(kind: str, n_params: int) -> None:
    head = build_head(kind, 8, 4)
    assert sum(p.numel() for p in head.parameters()) == n_params
    assert head(torch.randn(3, 8)).shape == (3, 4)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())


def test_unknown_head() -> None:
    with pytest.raises(ValueError, match="head must be one of"):
        build_head("conv", 8, 4)
