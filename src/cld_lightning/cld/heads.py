"""Projection heads for the instance branch ``f_I`` and the group branch ``f_G`` (no BatchNorm)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HeadKind = Literal["linear", "mlp", "normlinear", "normmlp"]
HEAD_KINDS: tuple[str, ...] = ("linear", "mlp", "normlinear", "normmlp")


class NormLinear(nn.Module):
    """The paper's normalised projection: ``y = normalize(x) @ normalize(W, dim=0)``, no bias.

    Each output is a cosine between the input and a weight column; the output is L2-normalised
    again. Init as the reference: uniform(-1, 1), each column rescaled to unit norm.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        y = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)
        return F.normalize(y, dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def build_head(
    kind: HeadKind, in_dim: int, out_dim: int = 128, hidden_dim: int | None = None
) -> nn.Module:
    """A projection head: ``linear`` | ``mlp`` (Linear-ReLU-Linear) | ``normlinear`` | ``normmlp``.

    ``normmlp`` is the paper's NormMLP: ``Linear(in, hidden) + ReLU`` then :class:`NormLinear`.
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"head must be one of {HEAD_KINDS}, got {kind!r}")
    hidden = hidden_dim or in_dim
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "normlinear":
        return NormLinear(in_dim, out_dim)
    final: nn.Module = nn.Linear(hidden, out_dim) if kind == "mlp" else NormLinear(hidden, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), final)
