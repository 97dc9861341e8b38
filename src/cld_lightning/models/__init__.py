"""Backbones."""

from cld_lightning.models.resnet import BACKBONES, CifarResNet, build_backbone

__all__ = ["BACKBONES", "CifarResNet", "build_backbone"]
