"""InfoMin (Tian et al. 2020): MoCo v2 + the InfoMin augmentation + a PIRL-style jigsaw branch.

Use with ``data.augmentation=infomin``. The jigsaw branch (PyContrast's ``JigsawHead``): the view
``jigsaw_view`` (default: the first query crop) is cut into ``grid x grid`` patches, the patches
of each image are shuffled by a random permutation, each patch goes through the query backbone,
a per-patch head maps it to ``embed_dim``, the shuffled patch embeddings are concatenated and a
linear layer gives one L2-normalised embedding ``q_jig``. ``q_jig`` is contrasted with the same
key and queue as the query. The instance loss is PyContrast's combination
``(1-β)·L_MoCo + β·L_jigsaw`` (β = ``jigsaw_weight`` = 0.5); CLD adds ``λ·L_CLD`` on top. Keys
are enqueued **once** per step (the CLD reference enqueues twice; we do not copy that).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.cld.heads import build_head
from cld_lightning.losses.infonce import infonce_loss
from cld_lightning.losses.jigsaw import jigsaw_patches, jigsaw_permutation
from cld_lightning.methods.moco import MoCo


class JigsawHead(nn.Module):
    """Per-patch head, then ``Linear(P·E, E)`` over the concatenated (shuffled) patch embeddings."""

    def __init__(
        self,
        feature_dim: int,
        embed_dim: int,
        num_patches: int,
        kind: str = "linear",
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.patch_head = build_head(kind, feature_dim, embed_dim, hidden_dim)  # type: ignore[arg-type]
        self.aggregate = nn.Linear(num_patches * embed_dim, embed_dim)

    def forward(self, patch_features: Tensor) -> Tensor:
        """``[B·P, D]`` patch features (image-major) -> ``[B, E]`` L2-normalised ``q_jig``."""
        y = self.patch_head(patch_features)
        return F.normalize(self.aggregate(y.reshape(-1, self.num_patches * y.shape[1])), dim=1)


class InfoMin(MoCo):
    """InfoMin(+CLD). All :class:`MoCo` arguments, plus:

    Args:
        jigsaw_weight: ``β`` in ``(1-β)·L_MoCo + β·L_jigsaw`` (0.5; 0 switches the branch off).
        jigsaw_grid: patches per side (3 -> 9 patches).
        jigsaw_patch_size: random ``p x p`` crop inside each cell (PIRL jitter); null = whole cell.
        jigsaw_view: index of the view cut into patches (0 = the first query crop: no extra view
            to load; ``num_crops`` = a separate extra crop, then set ``data.num_views`` one higher).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_samples: int | None = None,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        jigsaw_weight: float = 0.5,
        jigsaw_grid: int = 3,
        jigsaw_patch_size: int | None = None,
        jigsaw_view: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("temperature", 0.15)
        super().__init__(backbone, num_samples, cld, **kwargs)
        if not 0.0 <= jigsaw_weight <= 1.0:
            raise ValueError(f"method.jigsaw_weight (β) must be in [0, 1], got {jigsaw_weight}")
        if jigsaw_grid < 1:
            raise ValueError(f"method.jigsaw_grid must be >= 1, got {jigsaw_grid}")
        if not 0 <= jigsaw_view <= self.num_crops:
            raise ValueError(
                f"method.jigsaw_view must be in [0, {self.num_crops}], got {jigsaw_view}"
            )
        self.jigsaw_weight = jigsaw_weight
        self.jigsaw_grid = jigsaw_grid
        self.jigsaw_patch_size = jigsaw_patch_size
        self.jigsaw_view = jigsaw_view
        # β = 0: no jigsaw head at all (an unused head would break DDP's gradient reduction)
        self.jigsaw_head = (
            JigsawHead(
                self.feature_dim,
                self.embed_dim,
                jigsaw_grid**2,
                kwargs.get("instance_head", "linear"),
                kwargs.get("head_hidden_dim"),
            )
            if jigsaw_weight > 0
            else None
        )
        self.save_hyperparameters(ignore=["backbone"])

    def required_views(self) -> int:
        return max(self.num_crops, self.jigsaw_view + 1)

    def jigsaw_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q_jig`` of images ``x`` and the patch permutation used (``[B·P]`` indices)."""
        if self.jigsaw_head is None:
            raise RuntimeError("the jigsaw branch is off (method.jigsaw_weight=0)")
        patches = jigsaw_patches(x, self.jigsaw_grid, self.jigsaw_patch_size)
        perm = jigsaw_permutation(x.shape[0], self.jigsaw_grid**2, device=x.device)
        return self.jigsaw_head(self.features(patches[perm])), perm

    def contrastive_losses(
        self, views: list[Tensor], pairs: list[tuple[Tensor, Tensor]], feats: list[Tensor]
    ) -> dict[str, Tensor]:
        """``instance_loss = (1-β)·L_MoCo + β·L_jigsaw`` (the jigsaw positive: the first pair's key)."""
        losses = super().contrastive_losses(views, pairs, feats)
        if self.jigsaw_weight == 0:
            return losses
        moco = losses["instance_loss"]
        q_jig, _ = self.jigsaw_embedding(views[self.jigsaw_view])
        jig = infonce_loss(q_jig, pairs[0][1], self.queue.queue.clone(), self.temperature)
        beta = self.jigsaw_weight
        losses.update(moco_loss=moco, jigsaw_loss=jig, instance_loss=(1 - beta) * moco + beta * jig)
        return losses


__all__ = ["InfoMin", "JigsawHead"]
