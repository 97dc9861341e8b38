"""One LightningModule per base method, each with CLD on or off."""

from cld_lightning.methods.base import InstanceStep, SSLMethod
from cld_lightning.methods.byol import BYOL
from cld_lightning.methods.infomin import InfoMin, JigsawHead
from cld_lightning.methods.moco import MoCo
from cld_lightning.methods.npid import NPID

__all__ = ["BYOL", "NPID", "InfoMin", "InstanceStep", "JigsawHead", "MoCo", "SSLMethod"]
