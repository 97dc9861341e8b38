"""NPID (Wu et al. 2018) with optional CLD: non-parametric instance discrimination + local groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from cld_lightning.cld.config import CLDConfig
from cld_lightning.losses.npid import npid_logits, npid_nce_loss, npid_softmax_loss
from cld_lightning.methods.base import Batch, InstanceStep, PendingUpdate, SSLMethod
from cld_lightning.modules.memory_bank import MemoryBank

BANK_INITS = ("random", "embeddings")


class NPID(SSLMethod):
    """NPID(+CLD) as the reference CIFAR recipe runs it.

    Each view is encoded separately; the instance loss is the mean over views of a full-softmax
    cross-entropy against the memory bank (target = the sample's index, ``τ = 0.1``), or NCE with
    ``nce_k`` negatives. With CLD on, ``L = L_instance + λ·L_CLD`` on the first two views. The
    bank is updated after the optimiser step, once per view: ``m ← normalize(0.5·m + 0.5·z)``.

    Args:
        num_samples: number of training instances (bank rows).
        temperature: instance temperature ``τ``.
        bank_momentum: ``μ`` of the bank update (0.5).
        num_views: views used by the instance loss (1 = plain NPID, 2 = reference NPID+CLD).
        nce_k: 0 = full softmax (reference); ``K > 0`` = NCE with ``K`` negatives.
        gather_distributed: gather indices/embeddings of all processes for the bank update.
        bank_init: ``random`` (the reference: uniform(-s, s) rows) or ``embeddings``: before the
            first step, fill row ``i`` with the untrained network's embedding of instance ``i``
            (test transform; needs a datamodule with ``instance_loader()``, as
            :class:`~cld_lightning.data.SSLDataModule`). With random rows every instance is
            first pulled towards an arbitrary code; see docs/BENCHMARKS.md (NPID ablation).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_samples: int,
        cld: CLDConfig | dict[str, Any] | None = None,
        *,
        temperature: float = 0.1,
        bank_momentum: float = 0.5,
        num_views: int = 2,
        nce_k: int = 0,
        gather_distributed: bool = True,
        bank_init: str = "random",
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, cld, **kwargs)
        if temperature <= 0:
            raise ValueError(f"method.temperature must be > 0, got {temperature}")
        if num_views < 1:
            raise ValueError(f"method.num_views must be >= 1, got {num_views}")
        if self.cld_enabled and num_views < 2:
            raise ValueError("CLD needs two views: set method.num_views >= 2 (or cld=off)")
        if bank_init not in BANK_INITS:
            raise ValueError(f"method.bank_init must be one of {BANK_INITS}, got {bank_init!r}")
        if nce_k < 0:
            raise ValueError(f"method.nce_k must be >= 0 (0 = full softmax), got {nce_k}")
        self.temperature = temperature
        self.num_views = num_views
        self.nce_k = nce_k
        self.bank_init = bank_init
        self.memory = MemoryBank(num_samples, self.embed_dim, bank_momentum, gather_distributed)
        # NCE normaliser Z, estimated on the first batch and then fixed (NPID's NCEAverage).
        self.register_buffer("nce_normalizer", torch.full((), -1.0), persistent=True)
        # 1 once the bank holds real embeddings (bank_init=embeddings); checkpointed, so a resumed
        # run does not overwrite a trained bank
        self.register_buffer("bank_filled", torch.zeros((), dtype=torch.long), persistent=True)
        self.save_hyperparameters(ignore=["backbone"])

    @torch.no_grad()
    def fill_bank(self, loader: Iterable) -> None:
        """Set bank row ``i`` to the current network's embedding of instance ``i`` (eval mode;
        ``loader`` yields ``(image, target, index)`` over the pretraining instances)."""
        from cld_lightning.eval.features import extract_features

        z, _, index = extract_features(self, loader, self.device)
        if index.numel() != self.memory.num_samples or int(index.max()) >= self.memory.num_samples:
            raise ValueError(
                f"method.bank_init=embeddings: the instance loader yielded {index.numel()} rows "
                f"(max index {int(index.max())}) for a bank of {self.memory.num_samples}"
            )
        self.memory.bank.index_copy_(0, index.to(self.device), z.to(self.device))
        self.bank_filled.fill_(1)

    def on_train_start(self) -> None:
        if self.bank_init != "embeddings" or int(self.bank_filled) == 1:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "instance_loader"):
            raise ValueError(
                "method.bank_init=embeddings needs a datamodule with instance_loader() "
                "(cld_lightning.data.SSLDataModule), or call NPID.fill_bank(loader) before fit"
            )
        self.fill_bank(datamodule.instance_loader())

    def instance_loss(self, z: Tensor, index: Tensor) -> Tensor:
        bank = self.memory.bank
        if self.nce_k == 0:
            return npid_softmax_loss(z, bank, index, self.temperature)
        if self.nce_normalizer.item() < 0:
            with torch.no_grad():
                rows = bank[torch.randint(0, bank.shape[0], (self.nce_k,), device=z.device)]
                sample = torch.exp(npid_logits(z.detach(), rows, self.temperature))
                self.nce_normalizer.fill_(float(sample.mean() * bank.shape[0]))
        return npid_nce_loss(z, bank, index, self.temperature, self.nce_k, self.nce_normalizer)

    def instance_step(self, batch: Batch, batch_idx: int) -> InstanceStep:
        """Mean over views of the bank loss; CLD views = the first two views."""
        views, _, index = batch
        if len(views) < self.num_views:
            raise ValueError(
                f"NPID with num_views={self.num_views} got batches with {len(views)} view(s): "
                f"set data.num_views={self.num_views}"
            )
        feats = [self.features(v) for v in views[: self.num_views]]
        zs = [self.instance_embedding(f) for f in feats]
        inst = torch.stack([self.instance_loss(z, index) for z in zs]).mean()
        cld_views = (feats[0], feats[1]) if len(feats) >= 2 else None
        pending = PendingUpdate(index=index, embeddings=tuple(z.detach() for z in zs))
        return InstanceStep({"instance_loss": inst}, cld_views, pending)

    def update_state(self, pending: PendingUpdate) -> None:
        """After the optimiser step: bank rows ``index`` ← each view's embedding, in turn."""
        if pending.index is None:
            raise ValueError("NPID.update_state: the pending update has no instance indices")
        for z in pending.embeddings:
            self.memory.update(pending.index, z)
