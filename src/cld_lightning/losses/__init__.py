"""Instance-level losses of the base methods (pure functions)."""

from cld_lightning.losses.npid import npid_nce_loss, npid_softmax_loss

__all__ = ["npid_nce_loss", "npid_softmax_loss"]
