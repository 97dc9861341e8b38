"""Compatibility with checkpoints and configs of earlier versions: the one place for old names.

* :data:`LEGACY_ARGUMENTS`: constructor arguments renamed (old -> new) or removed (old -> ``None``).
  The hyper-parameters of old checkpoints and the ``method`` configs stored in them are migrated
  (:func:`migrate_arguments`, called by ``SSLMethod.migrate_arguments``); ``cld-train`` refuses
  an old name in a new config, naming the new one (:func:`legacy_arguments`).
* :data:`LEGACY_STATE_PREFIXES`: state-dict key prefixes renamed (old -> new), applied when a
  checkpoint (``SSLMethod.on_load_checkpoint``) or a state dict (``load_state_dict``, the
  pre-hooks of :func:`register_load_hooks`) is loaded.
* ``knn_best``: checkpoints written before it existed load with "no best yet".

Both tables are keyed by the method class's qualified name; a subclass inherits the entries of
its bases (e.g. InfoMin, a MoCo, loads MoCo's old ``key_encoder.*`` keys). Renaming a method
argument or a stored module: add the old name here, and a test that an old checkpoint loads
(``tests/methods/test_momentum.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch
from torch import nn

#: old constructor arguments, per method class: old name -> new name, or ``None`` (removed)
LEGACY_ARGUMENTS: dict[str, dict[str, str | None]] = {
    # cld-train passed the data set size to every method before; only NPID uses it
    "cld_lightning.methods.momentum.MomentumMethod": {"num_samples": None},
    # BYOL's EMA settings before the one naming scheme of MomentumMethod
    "cld_lightning.methods.byol.BYOL": {
        "target_momentum": "ema_momentum",
        "target_cosine": "ema_cosine",
    },
}

#: old state-dict key prefixes, per method class: old prefix -> new prefix
LEGACY_STATE_PREFIXES: dict[str, dict[str, str]] = {
    # MoCo's EMA copy was ``key_encoder`` before the one naming scheme (``momentum_encoder``)
    "cld_lightning.methods.moco.MoCo": {"key_encoder.": "momentum_encoder."},
    # BYOL's was ``target`` (backbone + projector)
    "cld_lightning.methods.byol.BYOL": {
        "target.backbone.": "momentum_encoder.backbone.",
        "target.projector.": "momentum_encoder.head.",
    },
}


def _inherited(table: Mapping[str, Mapping[str, Any]], cls: type) -> dict[str, Any]:
    """The entries of ``cls`` and its bases in ``table`` (a subclass's entry wins)."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        out.update(table.get(f"{klass.__module__}.{klass.__qualname__}", {}))
    return out


def legacy_arguments(cls: type) -> dict[str, str | None]:
    """Old constructor argument names of ``cls``: old -> new, or ``None`` (removed)."""
    return _inherited(LEGACY_ARGUMENTS, cls)


def legacy_state_prefixes(cls: type) -> dict[str, str]:
    """Old state-dict key prefixes of ``cls``: old -> new."""
    return _inherited(LEGACY_STATE_PREFIXES, cls)


def migrate_arguments(cls: type, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` (hyper-parameters or a ``method`` config) with the old names of ``cls``
    renamed and removed ones dropped (a new name already present wins)."""
    renames = legacy_arguments(cls)
    out = {k: v for k, v in arguments.items() if k not in renames}
    for old, new in renames.items():
        if old in arguments and new is not None:
            out.setdefault(new, arguments[old])
    return out


def rename_legacy_keys(state: MutableMapping[str, Any], renames: Mapping[str, str]) -> None:
    """Rename the keys of ``state`` starting with an old prefix of ``renames`` (old -> new), in
    place; a key whose new name is already present is left alone."""
    for key in list(state):
        for old, new in renames.items():
            if key.startswith(old):
                renamed = new + key[len(old) :]
                if renamed not in state:
                    state[renamed] = state.pop(key)
                break


def migrate_checkpoint_state(module: nn.Module, checkpoint: MutableMapping[str, Any]) -> None:
    """A checkpoint's ``state_dict`` with the old key prefixes of ``module``'s class renamed, in
    place (``on_load_checkpoint``: before Lightning loads it)."""
    state = checkpoint.get("state_dict")
    if state is not None:
        rename_legacy_keys(state, legacy_state_prefixes(type(module)))


def _rename_legacy_state(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """``load_state_dict`` of a state dict written before a rename (e.g. by ``cld-eval``)."""
    renames = legacy_state_prefixes(type(module))
    if renames:
        rename_legacy_keys(state_dict, {prefix + o: prefix + n for o, n in renames.items()})


def _default_knn_best(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Checkpoints written before ``knn_best`` existed load with "no best yet"."""
    state_dict.setdefault(prefix + "knn_best", torch.full((), -1.0))


def register_load_hooks(module: nn.Module) -> None:
    """The ``load_state_dict`` pre-hooks that make old state dicts load into ``module``."""
    module.register_load_state_dict_pre_hook(_default_knn_best)
    module.register_load_state_dict_pre_hook(_rename_legacy_state)
