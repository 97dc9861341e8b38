"""cld-lightning: CLD (Cross-Level Instance-Group Discrimination, CVPR 2021) for PyTorch Lightning."""

from cld_lightning.cld import CLDCallback, CLDConfig, CLDMixin

__version__ = "0.1.0"
__all__ = ["CLDCallback", "CLDConfig", "CLDMixin", "__version__"]
