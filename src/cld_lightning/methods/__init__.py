"""One LightningModule per base method, each with CLD on or off."""

from cld_lightning.methods.base import InstanceStep, PendingUpdate, SSLMethod
from cld_lightning.methods.byol import BYOL
from cld_lightning.methods.infomin import InfoMin, JigsawHead
from cld_lightning.methods.moco import MoCo
from cld_lightning.methods.momentum import MomentumMethod
from cld_lightning.methods.npid import NPID
from cld_lightning.methods.optim import LARS

__all__ = [
    "BYOL",
    "LARS",
    "NPID",
    "InfoMin",
    "InstanceStep",
    "JigsawHead",
    "MoCo",
    "MomentumMethod",
    "PendingUpdate",
    "SSLMethod",
]
