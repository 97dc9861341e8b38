"""Parameter groups and optimisers: the reference default (one SGD group, decay on everything),
``exclude_bias_and_norm_from_wd``, LARS (a step equal to a hand-computed one), BYOL's
``predictor_lr``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from cld_lightning.methods import BYOL, LARS
from cld_lightning.methods.optim import parameter_groups
from tests.helpers import MLPBackbone, make_npid

WD = 5e-4

# every trainable parameter of _byol(): 20, of which these 13 are biases or BatchNorm parameters
NO_DECAY = {
    "backbone.net.1.bias",
    "backbone.net.2.weight",  # BatchNorm1d
    "backbone.net.2.bias",
    "backbone.net.4.bias",
    "instance_head.0.bias",
    "instance_head.1.weight",  # BatchNorm1d of the projector
    "instance_head.1.bias",
    "instance_head.3.bias",
    "group_head.bias",
    "predictor.0.bias",
    "predictor.1.weight",  # BatchNorm1d of the predictor
    "predictor.1.bias",
    "predictor.3.bias",
}
DECAY = {
    "backbone.net.1.weight",
    "backbone.net.4.weight",
    "instance_head.0.weight",
    "instance_head.3.weight",
    "group_head.weight",
    "predictor.0.weight",
    "predictor.3.weight",
}


def _byol(**kw: Any) -> BYOL:
    torch.manual_seed(0)
    return BYOL(
        MLPBackbone(),
        {"num_clusters": 4, "out_dim": 8},
        embed_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
        lr=0.1,
        weight_decay=WD,
        warmup_epochs=0,
        **kw,
    )


def _names(model: nn.Module, params: list[nn.Parameter]) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def _configure(model: Any, total_steps: int = 10) -> tuple[torch.optim.Optimizer, Any]:
    model._trainer = type("T", (), {"estimated_stepping_batches": total_steps, "max_epochs": 1})()
    try:
        out = model.configure_optimizers()
    finally:
        model._trainer = None
    return out["optimizer"], out["lr_scheduler"]["scheduler"]


def test_default_is_one_sgd_group_decaying_every_trainable_parameter() -> None:
    model = _byol()
    groups = model.parameter_groups()
    assert len(groups) == 1
    assert _names(model, groups[0]["params"]) == NO_DECAY | DECAY  # 20, momentum encoder not
    assert len(groups[0]["params"]) == 20
    assert [id(p) for p in groups[0]["params"]] == [
        id(p) for p in model.parameters() if p.requires_grad
    ]  # the order of the reference's single list (old optimiser states still load)
    assert (groups[0]["lr"], groups[0]["weight_decay"]) == (0.1, WD)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=WD)
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.9


def test_exclusion_puts_exactly_the_bias_and_norm_parameters_in_a_wd0_group() -> None:
    model = _byol(exclude_bias_and_norm_from_wd=True)
    groups = model.parameter_groups()
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (0.1, WD, 7),
        (0.1, 0.0, 13),
    ]
    assert _names(model, groups[0]["params"]) == DECAY
    assert _names(model, groups[1]["params"]) == NO_DECAY


def test_shared_hidden_layer_is_grouped_once() -> None:
    """normmlp heads share their hidden layer (cld.share_hidden): each parameter in one group."""
    model = make_npid(
        cld={"head": "normmlp"}, instance_head="normmlp", exclude_bias_and_norm_from_wd=True
    )
    assert model.group_head[0] is model.instance_head[0]
    groups = model.parameter_groups()
    flat = [id(p) for g in groups for p in g["params"]]
    assert len(flat) == len(set(flat)) == sum(1 for p in model.parameters() if p.requires_grad)
    no_decay = _names(model, groups[1]["params"])
    assert no_decay == {
        "backbone.net.1.bias",
        "backbone.net.2.weight",
        "backbone.net.2.bias",
        "backbone.net.4.bias",
        "instance_head.0.bias",  # the shared hidden Linear's bias, once
    }  # NormLinear final layers have no bias


def test_predictor_lr_gets_its_own_groups_scaled_by_the_same_schedule() -> None:
    model = _byol(predictor_lr=0.5, exclude_bias_and_norm_from_wd=True)
    groups = model.parameter_groups()
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (0.1, WD, 5),
        (0.1, 0.0, 9),
        (0.5, WD, 2),
        (0.5, 0.0, 4),
    ]
    assert _names(model, groups[2]["params"]) == {"predictor.0.weight", "predictor.3.weight"}
    default = _byol()  # predictor_lr=None: the predictor shares method.lr, one group
    assert len(default.parameter_groups()) == 1
    model.warmup_epochs = 0
    opt, sched = _configure(model, total_steps=10)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1, 0.5, 0.5]  # step 0 of the cosine
    for _ in range(5):
        opt.step()
        sched.step()
    factor = 0.5 * (1 + math.cos(math.pi * 5 / 10))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [0.1 * factor, 0.1 * factor, 0.5 * factor, 0.5 * factor]
    )
    with pytest.raises(ValueError, match="method.predictor_lr"):
        _byol(predictor_lr=0.0)


def test_lars_step_equals_the_hand_computed_update() -> None:
    """Two steps, momentum 0.9, lr 0.5, wd 0.1, η 0.001: an adapted weight, a zero weight (no
    adaptation: trust ratio 1) and an excluded bias (plain momentum SGD, its group's wd = 0)."""
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))  # ‖w‖ = 5
    z = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = LARS(
        [{"params": [w, z]}, {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
        lr=0.5,
        momentum=0.9,
        weight_decay=0.1,
    )
    g_w, g_z, g_b = [0.6, 0.8], [1.0, 1.0], [0.5, 0.5]  # ‖g_w‖ = 1

    def step() -> None:
        w.grad = torch.tensor(g_w, dtype=torch.float64)
        z.grad = torch.tensor(g_z, dtype=torch.float64)
        b.grad = torch.tensor(g_b, dtype=torch.float64)
        opt.step()

    step()
    # ratio = 0.001·5 / (1 + 0.1·5 + 1e-8); d = (g + 0.1·w)·ratio = [0.9, 1.2]·ratio ≈ [0.003, 0.004]
    r1 = 0.001 * 5 / (1 + 0.5 + 1e-8)
    d1 = [(0.6 + 0.3) * r1, (0.8 + 0.4) * r1]
    assert w.tolist() == pytest.approx([3 - 0.5 * d1[0], 4 - 0.5 * d1[1]], abs=1e-12)
    assert w.tolist() == pytest.approx([2.9985, 3.998], abs=1e-9)
    assert z.tolist() == [-0.5, -0.5]  # ‖z‖ = 0: d = g (+ 0.1·0), no trust ratio
    assert b.tolist() == [0.75, -2.25]  # excluded: b - lr·g
    w1 = [3 - 0.5 * d1[0], 4 - 0.5 * d1[1]]
    step()
    n1 = math.hypot(*w1)
    r2 = 0.001 * n1 / (1 + 0.1 * n1 + 1e-8)
    d2 = [(g + 0.1 * x) * r2 for g, x in zip(g_w, w1, strict=True)]
    buf = [0.9 * a + c for a, c in zip(d1, d2, strict=True)]
    assert w.tolist() == pytest.approx(
        [x - 0.5 * v for x, v in zip(w1, buf, strict=True)], abs=1e-12
    )
    assert b.tolist() == pytest.approx([0.75 - 0.5 * 0.95, -2.25 - 0.5 * 0.95], abs=1e-12)
    # the gradients were not modified in place
    assert w.grad.tolist() == g_w and b.grad.tolist() == g_b


def test_method_optimizer_lars_excludes_bias_and_norm_from_adaptation() -> None:
    model = _byol(optimizer="lars", exclude_bias_and_norm_from_wd=True)
    opt, _ = _configure(model)
    assert isinstance(opt, LARS)
    assert [
        (g["lars_exclude"], g["weight_decay"], g["trust_coefficient"], len(g["params"]))
        for g in opt.param_groups
    ] == [(False, WD, 0.001, 7), (True, 0.0, 0.001, 13)]
    assert _names(model, opt.param_groups[1]["params"]) == NO_DECAY
    # without the wd option, LARS still leaves biases and norm parameters unadapted (decayed)
    plain, _ = _configure(_byol(optimizer="lars"))
    assert [(g["lars_exclude"], g["weight_decay"]) for g in plain.param_groups] == [
        (False, WD),
        (True, WD),
    ]


def test_unknown_optimizer_names_the_key() -> None:
    with pytest.raises(
        ValueError, match=r"method.optimizer must be one of \('sgd', 'adamw', 'lars'\)"
    ):
        _byol(optimizer="lamb")


def test_parameter_groups_function_on_a_plain_module() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 2, bias=False))
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    net.append(frozen)
    groups = parameter_groups(net, 0.1, 0.01, exclude_bias_and_norm_from_wd=True)
    assert [_names(net, g["params"]) for g in groups] == [
        {"0.weight", "2.weight"},
        {"0.bias", "1.weight", "1.bias"},
    ]
