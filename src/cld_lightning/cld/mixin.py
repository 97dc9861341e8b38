"""``CLDMixin``: adds CLD's group branch and cross-level loss to any LightningModule.

Works with ``pytorch_lightning`` and ``lightning.pytorch`` modules alike: it is a plain class that
only uses ``nn.Module`` attribute registration and ``self.log``. Usage::

    class MyModel(CLDMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.backbone = ...
            self.init_cld(512, num_clusters=128, temperature=0.2, weight=1.0)  # CLD on

        def training_step(self, batch, batch_idx):
            (x1, x2), *_ = batch
            f1, f2 = self.backbone(x1), self.backbone(x2)
            loss = my_instance_loss(f1, f2) + self.cld_loss(f1, f2)   # adds λ·L_CLD
            return loss

or, with the same bookkeeping as the built-in methods (``cld_weighted`` and ``loss`` keys)::

            losses = self.add_cld({"instance_loss": my_instance_loss(f1, f2)}, (f1, f2))
            return losses["loss"]
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.cld.heads import build_head
from cld_lightning.cld.loss import CrossLevelOutput, cross_level_loss_with_stats


class CLDMixin:
    """Owns the group head ``f_G`` (so DDP, optimisers and checkpoints see it) and ``λ·L_CLD``."""

    cld_config: CLDConfig
    group_head: nn.Module | None
    cld_weight: float
    last_cld_output: CrossLevelOutput | None

    def init_cld(
        self,
        feature_dim: int,
        config: CLDConfig | dict[str, Any] | None = None,
        *,
        shared_hidden: nn.Module | None = None,
        **settings: Any,
    ) -> None:
        """Create the group head. Call after ``super().__init__()`` of the LightningModule.

        Three forms:

        * ``init_cld(d, num_clusters=128, temperature=0.2, weight=1.0)``: keyword settings mean
          CLD **on** with these settings (the other :class:`CLDConfig` fields at their defaults);
        * ``init_cld(d, CLDConfig(...))`` (or a mapping): as given (keyword settings, if any, win
          over its fields);
        * ``init_cld(d)`` / ``init_cld(d, None)`` with no settings: CLD **off**, as everywhere in
          the package (``SSLMethod(cld=None)``, :meth:`CLDConfig.from_any`).

        An unknown or invalid setting raises ``ValueError`` naming the key (``cld.<key>``).

        Args:
            feature_dim: dimension of the backbone feature fed to ``f_G``.
            config: a :class:`CLDConfig` (or mapping), or ``None``.
            shared_hidden: the instance head's hidden ``Linear + ReLU`` block
                (:func:`~cld_lightning.cld.heads.hidden_block`); with ``share_hidden`` and an
                mlp/normmlp group head, ``f_G`` is this block followed by its own final layer.
            settings: :class:`CLDConfig` fields (``num_clusters``, ``temperature``, ``weight``...).
        """
        if not isinstance(self, nn.Module):
            raise TypeError("CLDMixin must be mixed into an nn.Module / LightningModule")
        if config is None and not settings:
            cfg = CLDConfig.from_any(None)  # off
        elif config is None:
            cfg = CLDConfig.from_any(settings)  # on, with these settings
        else:
            cfg = CLDConfig.from_any({**CLDConfig.from_any(config).to_dict(), **settings})
        self.cld_config = cfg
        self.cld_weight = float(cfg.weight)
        self.last_cld_output = None
        if cfg.enabled:
            hidden = None
            if cfg.share_hidden and shared_hidden is not None and cfg.head in ("mlp", "normmlp"):
                hidden = shared_hidden
                width = int(hidden[0].out_features)  # type: ignore[index]
                if cfg.hidden_dim is not None and cfg.hidden_dim != width:
                    raise ValueError(
                        f"cld.hidden_dim={cfg.hidden_dim} differs from the shared hidden layer's "
                        f"width {width} (the instance head's); set cld.share_hidden=false to "
                        "give the group head its own hidden layer"
                    )
            self.group_head = build_head(
                cfg.head, feature_dim, cfg.out_dim, cfg.hidden_dim, hidden=hidden
            )
        else:
            self.group_head = None

    @property
    def cld_enabled(self) -> bool:
        return getattr(self, "group_head", None) is not None

    def group_features(self, features: Tensor) -> Tensor:
        """``g = normalize(f_G(feature))``."""
        if self.group_head is None:
            raise RuntimeError("CLD is disabled (cld.enabled=false): no group head")
        return F.normalize(self.group_head(features), dim=1)

    def cld_gather(self, g: Tensor) -> Tensor:
        """Hook for ``cluster_scope=global``: gather ``g`` over processes with gradient."""
        from cld_lightning.modules.distributed import gather_with_grad

        return gather_with_grad(g)

    def cld_loss(self, features1: Tensor, features2: Tensor) -> Tensor:
        """``λ·L_CLD`` on the backbone features of two views of the same images.

        Logs ``cld/loss`` (unweighted), ``cld/group_acc``, ``cld/weight`` and cluster statistics.
        """
        cfg = self.cld_config
        g1, g2 = self.group_features(features1), self.group_features(features2)
        if cfg.cluster_scope == "global":
            g1, g2 = self.cld_gather(g1), self.cld_gather(g2)
        out = cross_level_loss_with_stats(
            g1,
            g2,
            cfg.num_clusters,
            cfg.temperature,
            cfg.num_iters,
            kmeans_init=cfg.kmeans_init,  # type: ignore[arg-type]
            spherical=cfg.spherical,
            detach_centroids=cfg.detach_centroids,
        )
        self.last_cld_output = out
        self._log_cld(out, batch_size=g1.shape[0])
        return self.cld_weight * out.loss

    def add_cld(
        self, losses: dict[str, Tensor], views: tuple[Tensor, Tensor] | None
    ) -> dict[str, Tensor]:
        """``losses["loss"] = losses["instance_loss"] (+ λ·L_CLD on ``views``)``, in place.

        ``views``: backbone features of the two CLD views (ignored, and may be ``None``, when CLD
        is off). With CLD on, ``losses["cld_weighted"]`` holds ``λ·L_CLD``. Returns ``losses``.
        """
        total = losses["instance_loss"]
        if self.cld_enabled:
            if views is None:
                raise RuntimeError(f"{type(self).__name__}: CLD is on but no CLD views were given")
            cld = self.cld_loss(views[0], views[1])
            losses["cld_weighted"] = cld
            total = total + cld
        losses["loss"] = total
        return losses

    def _log_cld(self, out: CrossLevelOutput, batch_size: int) -> None:
        log = getattr(self, "log", None)
        trainer = getattr(self, "_trainer", None)
        if log is None or trainer is None:  # used outside a Trainer (tests, scripts)
            return
        sizes = torch.stack(out.cluster_sizes).float()
        stats = {
            "cld/loss": out.loss.detach(),
            "cld/group_acc": out.group_acc,
            "cld/weight": torch.tensor(self.cld_weight),
            "cld/cluster_size_max": sizes.max(),
            "cld/empty_clusters": (sizes == 0).sum(dim=1).float().mean(),
        }
        for name, value in stats.items():
            log(
                name,
                value,
                on_step=True,
                on_epoch=True,
                batch_size=batch_size,
                prog_bar=name == "cld/loss",
                # the epoch value of a maximum is the largest step value, not their mean
                reduce_fx="max" if name == "cld/cluster_size_max" else "mean",
            )
