"""Old import paths of the application layer, kept for one release (removed in 0.3).

``cld_lightning.train`` and its siblings moved into :mod:`cld_lightning.app`; importing an old path
warns once (``DeprecationWarning``) and gives the new module itself, so ``monkeypatch`` and
``isinstance`` see one object.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

#: old module name under ``cld_lightning`` -> its home now
MOVED = {
    "train": "cld_lightning.app.train",
    "evaluate": "cld_lightning.app.evaluate",
    "build": "cld_lightning.app.build",
    "config_check": "cld_lightning.app.config_check",
    "resume": "cld_lightning.app.resume",
    "faults": "cld_lightning.app.faults",
    "checkpointing": "cld_lightning.app.checkpointing",
    "loggers": "cld_lightning.app.loggers",
    "dashboards": "cld_lightning.app.dashboards",
}


def moved(old: str) -> ModuleType:
    """Warn that ``cld_lightning.<old>`` moved, and alias it to its new module."""
    new = MOVED[old]
    warnings.warn(
        f"cld_lightning.{old} moved to {new}; the old path is removed in 0.3",
        DeprecationWarning,
        stacklevel=3,
    )
    module = importlib.import_module(new)
    sys.modules[f"cld_lightning.{old}"] = module
    return module
