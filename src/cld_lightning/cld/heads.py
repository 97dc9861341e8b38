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
    again (``normalize_output=False``: the raw cosines, as the reference's ``NormLinear`` returns
    them; its callers normalise afterwards except inside InfoMin's jigsaw head). Init as the
    reference: uniform(-1, 1), each column rescaled to unit norm.
    """

    def __init__(self, in_features: int, out_features: int, normalize_output: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.normalize_output = normalize_output
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        y = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)
        return F.normalize(y, dim=1) if self.normalize_output else y

    def extra_repr(self) -> str:
        extra = "" if self.normalize_output else ", normalize_output=False"
        return f"in_features={self.in_features}, out_features={self.out_features}{extra}"


def build_head(
    kind: HeadKind,
    in_dim: int,
    out_dim: int = 128,
    hidden_dim: int | None = None,
    hidden: nn.Module | None = None,
) -> nn.Module:
    """A projection head: ``linear`` | ``mlp`` (Linear-ReLU-Linear) | ``normlinear`` | ``normmlp``.

    ``normmlp`` is the paper's NormMLP: ``Linear(in, hidden) + ReLU`` then :class:`NormLinear`.
    ``hidden``: an existing ``Linear + ReLU`` block (from :func:`hidden_block`) to reuse as this
    head's hidden layer, the same parameter objects (the reference ImageNet models feed the
    instance and the group head from one shared hidden layer); mlp kinds only.
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"head must be one of {HEAD_KINDS}, got {kind!r}")
    hidden_out = hidden_dim or in_dim
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "normlinear":
        return NormLinear(in_dim, out_dim)
    if hidden is not None:
        hidden_out = int(hidden[0].out_features)  # type: ignore[index]
    final: nn.Module = (
        nn.Linear(hidden_out, out_dim) if kind == "mlp" else NormLinear(hidden_out, out_dim)
    )
    if hidden is not None:
        return nn.Sequential(hidden[0], hidden[1], final)  # type: ignore[index]
    return nn.Sequential(nn.Linear(in_dim, hidden_out), nn.ReLU(inplace=True), final)


def hidden_block(head: nn.Module) -> nn.Module | None:
    """The ``Linear + ReLU`` hidden block of an mlp/normmlp head from :func:`build_head` (the same
    module objects, not copies), or ``None`` for a head without one."""
    if (
        isinstance(head, nn.Sequential)
        and len(head) == 3
        and isinstance(head[0], nn.Linear)
        and isinstance(head[1], nn.ReLU)
    ):
        return nn.Sequential(head[0], head[1])
    return None
