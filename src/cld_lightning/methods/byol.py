"""BYOL (Grill et al. 2020) with optional CLD on the online network.

BYOL+CLD was announced by the CLD authors but never released; ours adds ``λ·L_CLD`` on the
online backbone features of the two views (group head ``f_G`` on the online backbone) next to
BYOL's symmetric regression loss. No extra forward pass is needed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.losses.byol import symmetric_byol_loss
from cld_lightning.methods.base import Batch, InstanceStep, SSLMethod
from cld_lightning.methods.schedule import total_training_steps
from cld_lightning.modules.ema import ema_step, frozen_copy, scheduled_momentum

KNN_FEATURES = ("backbone", "projection")


def bn_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projector/predictor: ``Linear - BatchNorm1d - ReLU - Linear``."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class BYOL(SSLMethod):
    """BYOL(+CLD): online = backbone + projector (``instance_head``) + predictor; target = EMA of
    backbone + projector.

    Loss ``L = ‖p̄₁ - z̄'₂‖² + ‖p̄₂ - z̄'₁‖²`` (``2 - 2cos``, summed over the two directions as in
    the paper) ``+ λ·L_CLD``. The target is initialised as a copy of the online network (so it is
    identical on all ranks: DDP broadcasts rank 0's module state) and updated deterministically
    after every optimiser step with ``τ_k = 1 - (1 - τ_base)(cos(πk/K) + 1)/2`` (``K`` = the
    trainer's total steps; constant ``τ_base`` outside a Trainer or with ``target_cosine=False``).

    Args:
        num_samples: ignored (cld-train passes the data set size to every method).
        embed_dim: projector output (256 in BYOL).
        projector_hidden_dim, predictor_hidden_dim: MLP hidden widths (4096 in BYOL).
        target_momentum: ``τ_base`` (0.99).
        target_cosine: cosine schedule of ``τ`` from ``τ_base`` to 1.
        knn_feature: what :meth:`embed` returns for kNN: ``backbone`` (L2-normalised backbone
            feature, the usual BYOL evaluation; default) or ``projection`` (normalised online
            projection, ``embed_dim``-d).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_samples: int | None = None,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        embed_dim: int = 256,
        projector_hidden_dim: int = 4096,
        predictor_hidden_dim: int = 4096,
        target_momentum: float = 0.99,
        target_cosine: bool = True,
        knn_feature: str = "backbone",
        **kwargs: Any,
    ) -> None:
        for key in ("instance_head", "head_hidden_dim"):
            if key in kwargs:
                raise ValueError(
                    f"method.{key} does not apply to BYOL: its projector is set by "
                    "method.embed_dim and method.projector_hidden_dim"
                )
        super().__init__(backbone, cld, embed_dim=embed_dim, **kwargs)
        for key, value in (
            ("method.projector_hidden_dim", projector_hidden_dim),
            ("method.predictor_hidden_dim", predictor_hidden_dim),
        ):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if not 0.0 <= target_momentum <= 1.0:
            raise ValueError(f"method.target_momentum must be in [0, 1], got {target_momentum}")
        if knn_feature not in KNN_FEATURES:
            raise ValueError(
                f"method.knn_feature must be one of {KNN_FEATURES}, got {knn_feature!r}"
            )
        self.instance_head = bn_mlp(self.feature_dim, projector_hidden_dim, embed_dim)
        self.predictor = bn_mlp(embed_dim, predictor_hidden_dim, embed_dim)
        self.target = nn.ModuleDict(
            {"backbone": frozen_copy(self.backbone), "projector": frozen_copy(self.instance_head)}
        )
        self.target_momentum = target_momentum
        self.target_cosine = target_cosine
        self.knn_feature = knn_feature
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long), persistent=True)
        self.save_hyperparameters(ignore=["backbone"])

    @property
    def projector(self) -> nn.Module:
        return self.instance_head

    def embed_features(self, f: Tensor) -> Tensor:
        """kNN embedding: normalised backbone feature (default) or online projection."""
        if self.knn_feature == "projection":
            return F.normalize(self.instance_head(f), dim=1)
        return F.normalize(f, dim=1)

    @torch.no_grad()
    def target_projection(self, x: Tensor) -> Tensor:
        return self.target["projector"](self.target["backbone"](self.prepare_input(x)))

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
        z1, z2 = self.target_projection(views[0]), self.target_projection(views[1])
        inst = symmetric_byol_loss(p1, p2, z1.detach(), z2.detach())
        return InstanceStep({"instance_loss": inst}, (f1, f2), True)

    def current_target_momentum(self) -> float:
        """``τ`` of this step (cosine from ``τ_base`` to 1 with ``target_cosine``)."""
        steps = total_training_steps(self)
        return scheduled_momentum(
            self.target_momentum, int(self.ema_steps), steps, self.target_cosine
        )

    def update_state(self, pending: Any) -> None:
        """After the optimiser step: ``θ_target ← τ·θ_target + (1-τ)·θ_online``."""
        pairs = [
            (self.target["backbone"], self.backbone),
            (self.target["projector"], self.instance_head),
        ]
        ema_step(pairs, self.current_target_momentum(), self.ema_steps)
