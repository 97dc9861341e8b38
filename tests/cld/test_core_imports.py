"""The CLD core imports without Lightning; ``CLDCallback`` is still where users look for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE = [
    "cld_lightning",
    "cld_lightning.cld",
    "cld_lightning.cld.kmeans",
    "cld_lightning.cld.loss",
    "cld_lightning.cld.heads",
    "cld_lightning.cld.config",
    "cld_lightning.cld.mixin",
]


def test_core_modules_do_not_import_lightning() -> None:
    """One fresh interpreter imports every core module (if together they pull in no Lightning,
    none of them does alone)."""
    code = (
        f"import sys, {', '.join(CORE)}\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pytorch_lightning', 'lightning', 'lightning_fabric'})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the CLD core imports {out.stdout.strip()}"


def test_callback_is_still_exported() -> None:
    import pytorch_lightning as pl
    from hydra.utils import get_object

    import cld_lightning
    from cld_lightning.cld import CLDCallback
    from cld_lightning.cld.callback import CLDCallback as Direct

    assert cld_lightning.CLDCallback is CLDCallback is Direct
    assert issubclass(CLDCallback, pl.Callback)
    assert get_object("cld_lightning.CLDCallback") is Direct  # the callbacks config's _target_
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        cld_lightning.Nope  # noqa: B018
