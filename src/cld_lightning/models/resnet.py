"""Backbones: CIFAR ResNets (3x3 stem, stride 1, no max-pool) with a width knob, torchvision ResNets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes * 4:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs as in the NPID/CLD CIFAR code; returns the pooled feature ``[B, D]``.

    ``width`` is the stem width (64 in the paper; 16 is a fast CPU setting), so ``D = 8·width`` for
    ResNet-18 and ``32·width`` for ResNet-50.
    """

    def __init__(
        self, block: type[nn.Module], num_blocks: list[int], width: int = 64, in_channels: int = 3
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"backbone width must be >= 1, got {width}")
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, width * 2, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, width * 4, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, width * 8, num_blocks[3], 2)
        self.feature_dim = width * 8 * block.expansion  # type: ignore[attr-defined]

    def _make_layer(
        self, block: type[nn.Module], planes: int, n: int, stride: int
    ) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion  # type: ignore[attr-defined]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet (ImageNet stem) without its classifier; ``width`` scales the channels."""

    def __init__(self, name: str, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        factory = getattr(torchvision.models, name)
        net = factory(
            weights=None, width_per_group=64 if name in ("resnet18", "resnet34") else width
        )
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


BACKBONES = ("cifar_resnet18", "cifar_resnet50", "resnet18", "resnet50", "small_cnn")


def build_backbone(
    name: str = "cifar_resnet18",
    width: int = 64,
    in_channels: int = 3,
    channels_last: bool = False,
    pool_size: int = 1,
) -> nn.Module:
    """Build a backbone by name (see ``BACKBONES``); the module exposes ``feature_dim``.

    ``pool_size`` (``small_cnn`` only): side of the final average-pooling grid; 1 is global
    average pooling, 2 keeps a 2x2 layout (feature ``4 x`` wider).
    """
    if not isinstance(channels_last, bool):
        raise ValueError(
            f"backbone.channels_last must be true or false here, got {channels_last!r} "
            "(`auto` is decided by cld-train: cld_lightning.app.build.build_layout_backbone)"
        )
    if pool_size != 1 and name != "small_cnn":
        raise ValueError(f"backbone.pool_size applies to small_cnn only, got it for {name!r}")
    if name == "cifar_resnet18":
        net: nn.Module = CifarResNet(BasicBlock, [2, 2, 2, 2], width, in_channels)
    elif name == "cifar_resnet50":
        net = CifarResNet(Bottleneck, [3, 4, 6, 3], width, in_channels)
    elif name in ("resnet18", "resnet50"):
        net = TorchvisionResNet(name, width, in_channels)
    elif name == "small_cnn":
        from cld_lightning.models.small_cnn import SmallConvNet

        net = SmallConvNet(width, in_channels, pool_size)
    else:
        raise ValueError(f"backbone.name must be one of {BACKBONES}, got {name!r}")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net
