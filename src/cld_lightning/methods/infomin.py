"""InfoMin (Tian et al. 2020): MoCo v2 + the InfoMin augmentation + a PIRL-style jigsaw branch.

The reference pipeline (``conf/experiment/imagenet_infomin_cld.yaml``): ``data.augmentation=
infomin_jigsaw`` with ``data.num_views = num_crops + 1`` and ``method.jigsaw_view = num_crops``:
the last view is the jigsaw image, a separate plain crop (no colour, blur or RandAugment; 255 px
at 224). The jigsaw branch (PyContrast's ``JigsawHead``): the view ``jigsaw_view`` is cut into
``grid x grid`` cells with one randomly placed ``jigsaw_patch_size`` patch per cell and image
(64 px in 85-px cells), the patches of each image are shuffled by a random permutation, each
patch goes through the query backbone, a per-patch head maps it to ``embed_dim``, the shuffled
patch embeddings are concatenated and a final layer (:class:`NormLinear` for norm* heads, as the
reference's ``JigsawHead``; ``nn.Linear`` otherwise) gives one L2-normalised embedding ``q_jig``.
``q_jig`` is contrasted with the same key and queue as the query. The instance loss is
PyContrast's combination ``(1-β)·L_MoCo + β·L_jigsaw`` (β = ``jigsaw_weight`` = 0.5), with
``L_MoCo`` the mean over the query crops; CLD adds ``λ·L_CLD`` on top. Keys are enqueued **once**
per step (the CLD reference enqueues twice; we do not copy that).

Option: ``jigsaw_view=0`` cuts the patches from the first query crop instead (no extra view to
load and augment, but the patches carry InfoMin's colour augmentation, unlike the reference).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.cld.heads import NormLinear, build_head
from cld_lightning.losses.jigsaw import (
    jigsaw_instance_loss,
    jigsaw_patches,
    jigsaw_permutation,
)
from cld_lightning.methods.moco import MoCo

# the reference's jigsaw geometry: 64-px patches in the 85-px cells of a 255-px image
JIGSAW_PATCH_RATIO = 64 / 85


def default_patch_size(cell: int) -> int:
    """``round(64/85 · cell)`` (64 at the reference's 85-px cells), at least 1."""
    return max(1, int(round(JIGSAW_PATCH_RATIO * cell)))


class JigsawHead(nn.Module):
    """Per-patch head, then a final layer ``P·E -> E`` over the concatenated (shuffled) patch
    embeddings (the reference's ``JigsawHead``: ``fc1`` per patch, ``fc2`` = NormLinear for
    norm* heads, else Linear; the per-patch NormLinear's cosines are not re-normalised)."""

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
        for module in self.patch_head.modules():  # the reference's fc1 ends in raw cosines
            if isinstance(module, NormLinear):
                module.normalize_output = False
        self.aggregate: nn.Module = (
            NormLinear(num_patches * embed_dim, embed_dim)
            if kind.startswith("norm")
            else nn.Linear(num_patches * embed_dim, embed_dim)
        )

    def forward(self, patch_features: Tensor) -> Tensor:
        """``[B·P, D]`` patch features (image-major) -> ``[B, E]`` L2-normalised ``q_jig``."""
        y = self.patch_head(patch_features)
        return F.normalize(self.aggregate(y.reshape(-1, self.num_patches * y.shape[1])), dim=1)


class InfoMin(MoCo):
    """InfoMin(+CLD). All :class:`MoCo` arguments, plus:

    Args:
        jigsaw_weight: ``β`` in ``(1-β)·L_MoCo + β·L_jigsaw`` (0.5; 0 switches the branch off).
        jigsaw_grid: patches per side (3 -> 9 patches).
        jigsaw_patch_size: random ``p x p`` crop inside each cell, drawn per image and cell
            (PIRL's jitter); null = the reference's proportion ``round(64/85·cell)`` (64 px in
            the 85-px cells of the 255-px jigsaw image); the cell size = no jitter.
        jigsaw_view: index of the view cut into patches: ``num_crops`` = the separate jigsaw
            image that ``data.augmentation=infomin_jigsaw`` appends as the last view (the
            reference; ``data.num_views = num_crops + 1``); 0 = the first query crop (option).
    """

    def __init__(
        self,
        backbone: nn.Module,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        jigsaw_weight: float = 0.5,
        jigsaw_grid: int = 3,
        jigsaw_patch_size: int | None = None,
        jigsaw_view: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("temperature", 0.15)
        super().__init__(backbone, cld, **kwargs)
        if not 0.0 <= jigsaw_weight <= 1.0:
            raise ValueError(f"method.jigsaw_weight (β) must be in [0, 1], got {jigsaw_weight}")
        if jigsaw_grid < 1:
            raise ValueError(f"method.jigsaw_grid must be >= 1, got {jigsaw_grid}")
        if jigsaw_patch_size is not None and jigsaw_patch_size < 1:
            raise ValueError(
                f"method.jigsaw_patch_size must be >= 1 or null, got {jigsaw_patch_size}"
            )
        if not 0 <= jigsaw_view <= self.num_crops:
            raise ValueError(
                f"method.jigsaw_view must be in [0, {self.num_crops}], got {jigsaw_view}"
            )
        self.jigsaw_weight = jigsaw_weight
        self.jigsaw_grid = jigsaw_grid
        self.jigsaw_patch_size = jigsaw_patch_size
        self.jigsaw_view = jigsaw_view
        # β = 0: no jigsaw head at all (an unused head would break DDP's gradient reduction);
        # its per-patch head is of the instance head's kind (method.instance_head)
        self.jigsaw_head = (
            JigsawHead(
                self.feature_dim,
                self.embed_dim,
                jigsaw_grid**2,
                self.instance_head_kind,
                self.head_hidden_dim,
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
        size = self.jigsaw_patch_size
        if size is None:
            size = default_patch_size(min(x.shape[-2:]) // self.jigsaw_grid)
        patches = jigsaw_patches(x, self.jigsaw_grid, size)
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
        total, jig = jigsaw_instance_loss(
            moco, q_jig, pairs[0][1], self.queue.queue.clone(), self.temperature, self.jigsaw_weight
        )
        losses.update(moco_loss=moco, jigsaw_loss=jig, instance_loss=total)
        return losses


__all__ = ["InfoMin", "JigsawHead", "default_patch_size"]
