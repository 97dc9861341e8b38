"""MoCo v2 (He et al. 2020; Chen et al. 2020) with optional CLD: an EMA key encoder (the
``momentum_encoder`` of :class:`~cld_lightning.methods.momentum.MomentumMethod`) and a queue.

Crop semantics (``num_crops``), all documented in :class:`MoCo`:

* ``2`` (standard MoCo): crop 1 -> query encoder, crop 2 -> key encoder; ``symmetric`` adds the
  swapped pair. With CLD on and ``symmetric=False``, crop 2 is *also* encoded by the query
  backbone to get CLD's second view: one extra query-encoder forward + backward per step (about
  +50% encoder compute over 2-crop MoCo). With ``symmetric=True`` that forward exists already.
* ``3`` (the reference MoCo+CLD recipe): crops 1 and 2 -> query encoder, both contrasted with
  the key of crop 3 and the queue (instance loss = their mean); CLD on crops 1 and 2.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.losses.infonce import infonce_accuracy, infonce_loss
from cld_lightning.methods.base import Batch, InstanceStep, PendingUpdate
from cld_lightning.methods.momentum import MomentumMethod
from cld_lightning.modules.queue import FeatureQueue
from cld_lightning.modules.shuffle_bn import batch_shuffle, batch_unshuffle

CROPS = (2, 3)

__all__ = ["MoCo"]


class MoCo(MomentumMethod):
    """MoCo v2(+CLD): query encoder = ``backbone`` + ``instance_head``; key encoder =
    ``momentum_encoder``, their EMA.

    The instance loss is InfoNCE of each query against its key (positive) and the queue
    (negatives) with temperature ``τ``. After the optimiser step (:meth:`update_state`), the key
    encoder is updated ``θ_k ← m·θ_k + (1-m)·θ_q`` and the step's keys are enqueued **once**
    (gathered over processes when ``gather_distributed``). The key encoder (no group head) and
    the queue are persistent, so checkpoints carry them.

    Args:
        queue_size: number of negatives ``K`` (any value; FIFO with wrap-around).
        temperature: InfoNCE temperature ``τ``.
        ema_momentum: key-encoder momentum ``m`` (0.999).
        ema_cosine: option; raise ``m`` to 1 with a cosine schedule over the training steps.
        num_crops: 2 (standard MoCo) or 3 (the reference MoCo+CLD recipe); see the module doc.
        symmetric: 2 crops only; also contrast query(crop 2) with key(crop 1), enqueue both keys.
        gather_distributed: enqueue the keys of all processes (every rank holds the same queue).
        shuffle_bn: shuffle the key encoder's batch across processes (no-op on one process).

    SyncBatchNorm is the trainer's job: ``trainer.sync_batchnorm=true`` converts every BatchNorm of
    the module, the key encoder's included.
    """

    def __init__(
        self,
        backbone: nn.Module,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        queue_size: int = 16384,
        temperature: float = 0.07,
        ema_momentum: float = 0.999,
        ema_cosine: bool = False,
        num_crops: int = 2,
        symmetric: bool = False,
        gather_distributed: bool = True,
        shuffle_bn: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, cld, ema_momentum=ema_momentum, ema_cosine=ema_cosine, **kwargs)
        if temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}")
        if num_crops not in CROPS:
            raise ValueError(f"method.num_crops must be one of {CROPS}, got {num_crops}")
        if symmetric and num_crops != 2:
            raise ValueError("method.symmetric applies to num_crops=2 only")
        if queue_size < 1:
            raise ValueError(f"method.queue_size must be >= 1, got {queue_size}")
        self.temperature = temperature
        self.num_crops = num_crops
        self.symmetric = symmetric
        self.shuffle_bn = shuffle_bn
        self.queue = FeatureQueue(queue_size, self.embed_dim, gather_distributed)
        self.save_hyperparameters(ignore=["backbone"])

    # ----------------------------------------------------------------- encoders
    @torch.no_grad()
    def key_embedding(self, x: Tensor) -> Tensor:
        """``k = normalize(f_I^key(backbone^key(x)))`` with shuffle-BN across processes."""
        x = self.prepare_input(x)
        unshuffle = None
        if self.shuffle_bn:
            x, unshuffle = batch_shuffle(x)
        k = F.normalize(self.momentum_encoder["head"](self.momentum_encoder["backbone"](x)), dim=1)
        return batch_unshuffle(k, unshuffle)

    def required_views(self) -> int:
        return self.num_crops

    def encode(
        self, views: list[Tensor]
    ) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]], Tensor]:
        """Return (query-backbone features for CLD, ``(query, key)`` pairs, keys to enqueue)."""
        if self.num_crops == 3:
            feats = [self.features(v) for v in views[:2]]
            k = self.key_embedding(views[2])
            pairs = [(self.instance_embedding(f), k) for f in feats]
            return feats, pairs, k
        feats = [self.features(views[0])]
        k2 = self.key_embedding(views[1])
        pairs = [(self.instance_embedding(feats[0]), k2)]
        keys = k2
        if self.symmetric:
            feats.append(self.features(views[1]))
            k1 = self.key_embedding(views[0])
            pairs.append((self.instance_embedding(feats[1]), k1))
            keys = torch.cat([k2, k1])
        elif self.cld_enabled:  # CLD's second view: the extra query-encoder forward of crop 2
            feats.append(self.features(views[1]))
        return feats, pairs, keys

    def contrastive_losses(
        self, views: list[Tensor], pairs: list[tuple[Tensor, Tensor]], feats: list[Tensor]
    ) -> dict[str, Tensor]:
        """MoCo's instance loss: mean over the ``(query, key)`` pairs of InfoNCE with the queue."""
        queue = self.queue.queue.clone()  # a snapshot: the in-place enqueue must not touch autograd
        inst = torch.stack([infonce_loss(q, k, queue, self.temperature) for q, k in pairs]).mean()
        acc = torch.stack([infonce_accuracy(q, k, queue) for q, k in pairs]).mean()
        return {"instance_loss": inst, "instance_acc": acc}

    # ----------------------------------------------------------------- training
    def instance_step(self, batch: Batch, batch_idx: int) -> InstanceStep:
        """InfoNCE of the queries; CLD views = the first two query-encoder features."""
        views = batch[0]
        need = self.required_views()
        if len(views) < need:
            raise ValueError(
                f"{type(self).__name__} with num_crops={self.num_crops} needs {need} views per "
                f"batch, got {len(views)}: set data.num_views={need}"
            )
        feats, pairs, keys = self.encode(views)
        losses = self.contrastive_losses(views, pairs, feats)
        cld_views = (feats[0], feats[1]) if len(feats) >= 2 else None
        return InstanceStep(losses, cld_views, PendingUpdate(keys=keys.detach()))

    def update_state(self, pending: PendingUpdate) -> None:
        """After the optimiser step: EMA key encoder, then enqueue this step's keys once."""
        self.momentum_update()
        if pending.keys is None:
            raise ValueError("MoCo.update_state: the pending update has no keys to enqueue")
        self.queue.enqueue(pending.keys)
