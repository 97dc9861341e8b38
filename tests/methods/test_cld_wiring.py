"""CLD is wired once, in ``SSLMethod.compute_loss``: each method only names its two CLD views.

For each method, one real training step logs ``cld/loss``; it must equal the pure
``cross_level_loss`` of the group features of the views the method documents as CLD's views,
computed by hand from a copy of the untrained model. Each case also computes a plausible wrong
wiring (another view, the key/target encoder, the same view twice) and checks that it gives a
different number, so the comparison can tell the wirings apart.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from cld_lightning.cld import cross_level_loss
from cld_lightning.methods import SSLMethod
from tests.helpers import TinyViews, make_byol, make_moco, make_resnet_npid, quiet_trainer

Features = Callable[[SSLMethod, list[Tensor]], tuple[Tensor, Tensor]]


def _perturb(module: torch.nn.Module) -> None:
    """Make an EMA copy differ from the online network (they start equal)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))


def _lcld(model: SSLMethod, f1: Tensor, f2: Tensor) -> float:
    cfg = model.cld_config
    g1, g2 = (F.normalize(model.group_head(f), dim=1) for f in (f1, f2))
    return float(cross_level_loss(g1, g2, cfg.num_clusters, cfg.temperature, cfg.num_iters))


def _query(m: SSLMethod, v: Tensor) -> Tensor:
    return m.features(v)


def _key(m: Any, v: Tensor) -> Tensor:
    return m.momentum_encoder["backbone"](v)


def _target(m: Any, v: Tensor) -> Tensor:
    return m.momentum_encoder["backbone"](v)


CASES: dict[str, tuple[Callable[[], SSLMethod], int, Features, list[Features]]] = {
    # (model factory, views per batch, the documented CLD views, wrong wirings)
    "moco_2crops": (
        lambda: make_moco(num_crops=2),
        2,
        lambda m, v: (_query(m, v[0]), _query(m, v[1])),
        [
            lambda m, v: (_query(m, v[0]), _key(m, v[1])),
            lambda m, v: (_query(m, v[0]), _query(m, v[0])),
        ],
    ),
    "moco_3crops": (
        lambda: make_moco(num_crops=3),
        3,
        lambda m, v: (_query(m, v[0]), _query(m, v[1])),
        [
            lambda m, v: (_query(m, v[0]), _query(m, v[2])),
            lambda m, v: (_query(m, v[1]), _key(m, v[2])),
        ],
    ),
    "byol": (
        lambda: make_byol(),
        2,
        lambda m, v: (_query(m, v[0]), _query(m, v[1])),
        [
            lambda m, v: (_query(m, v[0]), _target(m, v[1])),
            lambda m, v: (_query(m, v[1]), _query(m, v[1])),
        ],
    ),
    "npid_3views": (
        lambda: make_resnet_npid(n=32, num_views=3),
        3,
        lambda m, v: (_query(m, v[0]), _query(m, v[1])),
        [
            lambda m, v: (_query(m, v[1]), _query(m, v[2])),
            lambda m, v: (_query(m, v[0]), _query(m, v[2])),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logged_cld_loss_is_the_pure_loss_of_the_methods_views(name: str, tmp_path) -> None:
    factory, num_views, views_of, wrong = CASES[name]
    model = factory()
    for attr in ("momentum_encoder",):
        if hasattr(model, attr):
            _perturb(getattr(model, attr))
    loader = DataLoader(TinyViews(n=8, num_views=num_views), batch_size=8)
    views = next(iter(loader))[0]
    before = copy.deepcopy(model).train()  # train-mode BN, as in the step
    with torch.no_grad():
        expected = _lcld(before, *views_of(before, views))
        others = [_lcld(before, *w(before, views)) for w in wrong]
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(model, loader)
    logged = float(trainer.callback_metrics["cld/loss_step"])
    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-6)
    weighted = float(trainer.callback_metrics["train/cld_weighted_step"])
    assert weighted == pytest.approx(model.cld_weight * expected, rel=1e-5, abs=1e-6)
    for other in others:  # the test can tell a wrong wiring from the right one
        assert abs(other - expected) > 1e-4, (name, other, expected)
