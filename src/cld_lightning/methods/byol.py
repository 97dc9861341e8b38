"""BYOL (Grill et al. 2020) with optional CLD on the online network.

BYOL+CLD was announced by the CLD authors but never released; ours adds ``λ·L_CLD`` on the
online backbone features of the two views (group head ``f_G`` on the online backbone) next to
BYOL's symmetric regression loss. No extra forward pass is needed.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.losses.byol import symmetric_byol_loss
from cld_lightning.methods.base import Batch, InstanceStep, PendingUpdate
from cld_lightning.methods.momentum import MomentumMethod

KNN_FEATURES = ("backbone", "projection")


def bn_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector/predictor: ``Linear - BatchNorm1d - ReLU - Linear``."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class BYOL(MomentumMethod):
    """BYOL(+CLD): online = backbone + projector (``instance_head``) + predictor; target =
    ``momentum_encoder``, the EMA of backbone + projector.

    Loss ``L = ‖p̄₁ - z̄'₂‖² + ‖p̄₂ - z̄'₁‖²`` (``2 - 2cos``, summed over the two directions as in
    the paper) ``+ λ·L_CLD``. The target is initialised as a copy of the online network (so it is
    identical on all ranks: DDP broadcasts rank 0's module state) and updated deterministically
    after every optimiser step with ``τ_k = 1 - (1 - τ_base)(cos(πk/K) + 1)/2`` (``K`` = the
    trainer's total steps; constant ``τ_base`` outside a Trainer or with ``ema_cosine=False``).

    Args:
        embed_dim: projector output (256 in BYOL).
        projector_hidden_dim, predictor_hidden_dim: MLP hidden widths (4096 in BYOL).
        ema_momentum: ``τ_base`` (0.99; ``target_momentum`` before).
        ema_cosine: cosine schedule of ``τ`` from ``τ_base`` to 1 (``target_cosine`` before).
        predictor_lr: learning rate of the predictor's parameters (warm-up and cosine scaled
            like ``method.lr``); ``None`` = ``method.lr``.
        knn_feature: what :meth:`embed` returns for kNN: ``backbone`` (L2-normalised backbone
            feature, the usual BYOL evaluation; default) or ``projection`` (normalised online
            projection, ``embed_dim``-d).
    """

    def __init__(
        self,
        backbone: nn.Module,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        embed_dim: int = 256,
        projector_hidden_dim: int = 4096,
        predictor_hidden_dim: int = 4096,
        ema_momentum: float = 0.99,
        ema_cosine: bool = True,
        predictor_lr: float | None = None,
        knn_feature: str = "backbone",
        **kwargs: Any,
    ) -> None:
        for key in ("instance_head", "head_hidden_dim"):
            if key in kwargs:
                raise ValueError(
                    f"method.{key} does not apply to BYOL: its projector is set by "
                    "method.embed_dim and method.projector_hidden_dim"
                )
        for key, value in (
            ("method.projector_hidden_dim", projector_hidden_dim),
            ("method.predictor_hidden_dim", predictor_hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if predictor_lr is not None and predictor_lr <= 0:
            raise ValueError(f"method.predictor_lr must be > 0 or null, got {predictor_lr}")
        if knn_feature not in KNN_FEATURES:
            raise ValueError(
                f"method.knn_feature must be one of {KNN_FEATURES}, got {knn_feature!r}"
            )
        # the projector is the instance head (build_instance_head), its hidden width the
        # base's head_hidden_dim
        super().__init__(
            backbone,
            cld,
            embed_dim=embed_dim,
            instance_head="bn_mlp",
            head_hidden_dim=projector_hidden_dim,
            ema_momentum=ema_momentum,
            ema_cosine=ema_cosine,
            **kwargs,
        )
        self.predictor = bn_mlp(embed_dim, predictor_hidden_dim, embed_dim)
        self.predictor_lr = predictor_lr
        self.knn_feature = knn_feature
        self.save_hyperparameters(ignore=["backbone"])

    def build_instance_head(self, kind: str, hidden_dim: int | None) -> nn.Module:
        """BYOL's projector: ``Linear - BatchNorm1d - ReLU - Linear`` (:func:`bn_mlp`)."""
        return bn_mlp(self.feature_dim, int(hidden_dim or self.feature_dim), self.embed_dim)

    @property
    def projector(self) -> nn.Module:
        return self.instance_head

    def lr_by_prefix(self) -> dict[str, float]:
        """The predictor's learning rate (``method.predictor_lr``), when set."""
        return {} if self.predictor_lr is None else {"predictor.": self.predictor_lr}

    def embed_features(self, f: Tensor) -> Tensor:
        """kNN embedding: normalised backbone feature (default) or online projection."""
        if self.knn_feature == "projection":
            return F.normalize(self.instance_head(f), dim=1)
        return F.normalize(f, dim=1)

    def instance_step(self, batch: Batch, batch_idx: int) -> InstanceStep:
        """BYOL's symmetric regression; CLD views = the online backbone features."""
        views = batch[0]
        if len(views) < 2:
            raise ValueError(
                f"BYOL needs 2 views per batch, got {len(views)}: set data.num_views=2"
            )
        f1, f2 = self.features(views[0]), self.features(views[1])
        p1 = self.predictor(self.instance_head(f1))
        p2 = self.predictor(self.instance_head(f2))
        z1, z2 = self.momentum_projection(views[0]), self.momentum_projection(views[1])
        inst = symmetric_byol_loss(p1, p2, z1.detach(), z2.detach())
        # the state update is the target's EMA step alone: nothing to carry
        return InstanceStep({"instance_loss": inst}, (f1, f2), PendingUpdate())
