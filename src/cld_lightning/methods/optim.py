"""Optimisers and parameter groups of the methods: SGD (the reference), AdamW, LARS.

Parameter groups (:func:`parameter_groups`): by default one group holding every trainable
parameter, weight decay on all of them (the reference). Options, as SSL libraries offer them:

- ``exclude_bias_and_norm_from_wd``: biases and the parameters of normalisation layers
  (:data:`NORM_LAYERS`) go to groups with ``weight_decay = 0``;
- LARS (:class:`LARS`): the same parameters are excluded from the trust-ratio adaptation
  (``lars_exclude`` in their groups), as in BYOL and solo-learn;
- per-parameter learning rates by name prefix (BYOL's ``predictor_lr``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

OPTIMIZERS = ("sgd", "adamw", "lars")

#: layers whose parameters count as "norm" parameters (excluded from weight decay on request)
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def named_trainable_parameters(
    module: nn.Module,
) -> Iterator[tuple[str, nn.Parameter, bool]]:
    """``(name, parameter, is_bias_or_norm)`` of every trainable parameter, once each, in
    ``module.parameters()`` order. ``is_bias_or_norm``: a parameter named ``bias`` or one of a
    :data:`NORM_LAYERS` layer."""
    seen: set[int] = set()
    for mod_name, mod in module.named_modules():
        is_norm = isinstance(mod, NORM_LAYERS)
        for p_name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            yield name, p, is_norm or p_name == "bias"


def parameter_groups(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    exclude_bias_and_norm_from_wd: bool = False,
    lars: bool = False,
    lr_by_prefix: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups of ``module`` (see the module doc).

    Groups are keyed by (learning rate, bias/norm); each holds ``params``, ``lr`` and
    ``weight_decay``, plus ``lars_exclude`` when ``lars``. Without options: one group of every
    trainable parameter (the reference). ``lr_by_prefix``: parameters whose name starts with a
    key get its learning rate (first match), the others ``lr``.
    """
    prefixes = dict(lr_by_prefix or {})
    split = exclude_bias_and_norm_from_wd or lars
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p, bias_or_norm in named_trainable_parameters(module):
        p_lr = next((v for k, v in prefixes.items() if name.startswith(k)), lr)
        groups.setdefault((p_lr, split and bias_or_norm), []).append(p)
    out = []
    for (g_lr, excluded), params in groups.items():
        group: dict[str, Any] = {
            "params": params,
            "lr": g_lr,
            "weight_decay": 0.0 if excluded and exclude_bias_and_norm_from_wd else weight_decay,
        }
        if lars:
            group["lars_exclude"] = excluded
        out.append(group)
    return out


class LARS(torch.optim.Optimizer):
    """SGD with momentum and LARS layer-wise adaptation (You et al. 2017), as BYOL uses it
    (solo-learn's and timm's formulation). For each parameter ``p`` with gradient ``g``:

    - ``d = g + wd·p``;
    - unless its group has ``lars_exclude=True`` (biases and norm parameters):
      ``d ← η·‖p‖ / (‖g‖ + wd·‖p‖ + eps) · d`` when ``‖p‖ > 0`` and ``‖g‖ > 0``
      (``η`` = ``trust_coefficient``, 0.001);
    - momentum ``μ``: ``buf = d`` on the first step, then ``buf ← μ·buf + d``; ``p ← p - lr·buf``.

    Args:
        params: parameters or groups (a group may set ``lars_exclude``, ``lr``, ``weight_decay``).
        lr, momentum, weight_decay: as :class:`torch.optim.SGD`.
        trust_coefficient: ``η``.
        eps: added to the trust ratio's denominator.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"LARS: lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS: trust_coefficient must be > 0, got {trust_coefficient}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, mu = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                d = grad.add(p, alpha=wd) if wd != 0 else grad.clone()
                if not group["lars_exclude"]:
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    ratio = (
                        group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                    )
                    d.mul_(torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio)))
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-group["lr"])
        return loss


def build_optimizer(
    name: str, groups: list[dict[str, Any]], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``sgd`` (momentum, the reference), ``adamw`` or ``lars`` over ``groups``."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"method.optimizer must be one of {OPTIMIZERS}, got {name!r}")
