"""cld-lightning: CLD (Cross-Level Instance-Group Discrimination, CVPR 2021) for PyTorch Lightning.

``import cld_lightning`` and the core (``cld_lightning.cld``) do not import Lightning;
:class:`CLDCallback` is loaded on first access.
"""

from typing import Any

from cld_lightning.cld import CLDConfig, CLDMixin

__version__ = "0.1.0"
__all__ = ["CLDCallback", "CLDConfig", "CLDMixin", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "CLDCallback":
        from cld_lightning.cld.callback import CLDCallback

        return CLDCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
