"""Instance-level losses of the base methods (pure functions)."""

from cld_lightning.losses.byol import byol_regression_loss, symmetric_byol_loss
from cld_lightning.losses.infonce import infonce_accuracy, infonce_logits, infonce_loss
from cld_lightning.losses.jigsaw import (
    jigsaw_instance_loss,
    jigsaw_patches,
    jigsaw_permutation,
    unshuffle_permutation,
)
from cld_lightning.losses.npid import npid_logits, npid_nce_loss, npid_softmax_loss

__all__ = [
    "byol_regression_loss",
    "infonce_accuracy",
    "infonce_logits",
    "infonce_loss",
    "jigsaw_instance_loss",
    "jigsaw_patches",
    "jigsaw_permutation",
    "npid_logits",
    "npid_nce_loss",
    "npid_softmax_loss",
    "symmetric_byol_loss",
    "unshuffle_permutation",
]
