"""The one module of old names (``methods/legacy.py``): tables inherited along the class
hierarchy, argument migration and state-dict renames (old checkpoints load:
``tests/methods/test_momentum.py``)."""

from __future__ import annotations

import torch

from cld_lightning.methods import BYOL, NPID, InfoMin, MoCo
from cld_lightning.methods.legacy import (
    legacy_arguments,
    legacy_state_prefixes,
    migrate_arguments,
    rename_legacy_keys,
)


def test_old_names_are_inherited_by_subclasses() -> None:
    assert legacy_arguments(MoCo) == {"num_samples": None}  # from MomentumMethod
    assert legacy_arguments(BYOL) == {
        "num_samples": None,
        "target_momentum": "ema_momentum",
        "target_cosine": "ema_cosine",
    }
    assert legacy_arguments(NPID) == {}  # NPID takes num_samples: not an old name there
    assert legacy_state_prefixes(InfoMin) == {"key_encoder.": "momentum_encoder."}  # a MoCo
    assert legacy_state_prefixes(NPID) == {} and legacy_arguments(int) == {}

    class MyMoCo(MoCo):
        pass

    assert legacy_state_prefixes(MyMoCo) == legacy_state_prefixes(MoCo)


def test_migrate_arguments_renames_drops_and_keeps_a_new_name() -> None:
    old = {"target_momentum": 0.9, "num_samples": 100, "lr": 0.1}
    assert migrate_arguments(BYOL, old) == {"ema_momentum": 0.9, "lr": 0.1}
    assert BYOL.migrate_arguments(old) == migrate_arguments(BYOL, old)  # what base.py calls
    both = {"target_momentum": 0.9, "ema_momentum": 0.99}
    assert migrate_arguments(BYOL, both) == {"ema_momentum": 0.99}  # the new name wins


def test_rename_legacy_keys_in_place() -> None:
    state = {"key_encoder.0.weight": torch.ones(1), "queue.ptr": torch.zeros(1)}
    rename_legacy_keys(state, legacy_state_prefixes(MoCo))
    assert set(state) == {"momentum_encoder.0.weight", "queue.ptr"}
    clash = {"key_encoder.w": torch.ones(1), "momentum_encoder.w": torch.zeros(1)}
    rename_legacy_keys(clash, {"key_encoder.": "momentum_encoder."})
    assert float(clash["momentum_encoder.w"]) == 0.0 and "key_encoder.w" in clash
