"""One LightningModule per base method, each with CLD on or off."""

from cld_lightning.methods.base import SSLMethod
from cld_lightning.methods.npid import NPID

__all__ = ["NPID", "SSLMethod"]
