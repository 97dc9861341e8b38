"""A small VGG-style ConvNet for 28-32 px images on the CPU (the main job's backbone)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class SmallConvNet(nn.Module):
    """Five 3x3 conv-BN-ReLU layers (widths ``w, 2w, 2w, 4w, 4w``, two stride-2 steps), global
    average pooling; returns the pooled feature ``[B, 4w]``.

    At ``width=32`` (128-d feature, 0.28M parameters) it runs about 4x faster than the CIFAR
    ResNet-18 at width 16 on 28 px images and 2 CPU cores, which buys the epochs a self-supervised
    method needs inside a few minutes. It is not a paper backbone: use ``cifar_resnet18`` for the
    reference recipes.
    """

    def __init__(self, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"backbone width must be >= 1, got {width}")
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, 1),
            *_conv_bn_relu(w, 2 * w, 2),
            *_conv_bn_relu(2 * w, 2 * w, 1),
            *_conv_bn_relu(2 * w, 4 * w, 2),
            *_conv_bn_relu(4 * w, 4 * w, 1),
        )
        self.feature_dim = 4 * w

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
