"""Backbones: the main job's small ConvNet (shapes, size, registration, errors)."""

from __future__ import annotations

import pytest
import torch

from cld_lightning.models import BACKBONES, build_backbone
from cld_lightning.models.small_cnn import SmallConvNet


def _expected_params(w: int, c: int) -> int:
    convs = [(c, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w)]
    return sum(9 * i * o + 2 * o for i, o in convs)  # 3x3 weights (no bias) + BN affine


@pytest.mark.parametrize("width,channels,size", [(16, 1, 28), (32, 1, 28), (8, 3, 32)])
def test_small_cnn_shapes_and_parameter_count(width: int, channels: int, size: int) -> None:
    net = build_backbone("small_cnn", width, channels)
    assert isinstance(net, SmallConvNet) and net.feature_dim == 4 * width
    assert sum(p.numel() for p in net.parameters()) == _expected_params(width, channels)
    out = net(torch.randn(5, channels, size, size))
    assert out.shape == (5, 4 * width)
    assert (out >= 0).all()  # pooled ReLU activations


def test_small_cnn_downsamples_twice_and_pools_globally() -> None:
    net = SmallConvNet(4, 1).eval()
    feats = net.features(torch.randn(2, 1, 28, 28))
    assert feats.shape == (2, 16, 7, 7)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(net(x), net.features(x).mean(dim=(2, 3)))


def test_small_cnn_is_registered_and_validates_width() -> None:
    assert "small_cnn" in BACKBONES
    with pytest.raises(ValueError, match="width"):
        build_backbone("small_cnn", 0, 1)
    with pytest.raises(ValueError, match="backbone.name"):
        build_backbone("tiny_cnn", 16, 1)


def test_small_cnn_pool_grid_keeps_a_2x2_layout() -> None:
    torch.manual_seed(0)
    net = build_backbone("small_cnn", 4, 1, pool_size=2).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        maps = net.features(x)  # [3, 16, 7, 7]
        out = net(x)
    assert net.feature_dim == 16 * 4 and out.shape == (3, 64)
    cells = out.view(3, 16, 2, 2)
    # adaptive pooling of 7 -> 2: rows/cols 0-3 and 3-6 (windows overlap at index 3)
    torch.testing.assert_close(cells[..., 0, 0], maps[..., 0:4, 0:4].mean((-2, -1)))
    torch.testing.assert_close(cells[..., 1, 0], maps[..., 3:7, 0:4].mean((-2, -1)))
    torch.testing.assert_close(cells[..., 1, 1], maps[..., 3:7, 3:7].mean((-2, -1)))


def test_pool_size_is_checked() -> None:
    with pytest.raises(ValueError, match="pool_size applies to small_cnn only"):
        build_backbone("cifar_resnet18", 8, 3, pool_size=2)
    with pytest.raises(ValueError, match="pool_size must be >= 1"):
        build_backbone("small_cnn", 8, 1, pool_size=0)
