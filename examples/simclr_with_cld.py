"""A user's own SimCLR-style LightningModule that gets CLD in three lines via ``CLDMixin``.

Run it on random tensors (a smoke test, a few steps on the CPU)::

    python examples/simclr_with_cld.py

The three CLD lines are marked ``# CLD``: inherit ``CLDMixin`` first, call ``self.init_cld`` with
the backbone's feature dimension and the CLD settings (keyword settings mean CLD on with them; a
``CLDConfig`` works too; no settings or ``None`` mean CLD off), and add ``self.cld_loss(f1, f2)``
(= λ·L_CLD) to your loss.
Works the same with ``lightning.pytorch`` (pass ``lightning_module=lightning.pytorch.LightningModule``
to :func:`make_simclr_class`).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cld_lightning import CLDMixin


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's NT-Xent: each of the 2N embeddings must pick its partner among the other 2N-1."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def make_simclr_class(lightning_module: type = pl.LightningModule) -> type:
    """The example module, built on either Lightning namespace's ``LightningModule``."""

    class SimCLRWithCLD(CLDMixin, lightning_module):  # CLD: the mixin goes first
        def __init__(
            self,
            feature_dim: int = 32,
            lr: float = 0.05,
            cld_weight: float = 1.0,
            num_clusters: int = 4,
        ) -> None:
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(8, feature_dim),
            )
            self.projector = nn.Sequential(
                nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, 16)
            )
            self.lr = lr
            self.init_cld(  # CLD
                feature_dim, num_clusters=num_clusters, temperature=0.2, weight=cld_weight
            )
            self.history: list[dict[str, float]] = []

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            (x1, x2), *_ = batch
            f1, f2 = self.backbone(x1), self.backbone(x2)
            simclr = nt_xent(self.projector(f1), self.projector(f2))
            loss = simclr + self.cld_loss(f1, f2)  # CLD: adds λ·L_CLD
            self.history.append(
                {
                    "simclr": simclr.item(),
                    "loss": loss.item(),
                    "cld": self.last_cld_output.loss.item(),
                    "weight": self.cld_weight,
                }
            )
            self.log("train/simclr_loss", simclr)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    return SimCLRWithCLD


SimCLRWithCLD = make_simclr_class()


class RandomPairs(Dataset):
    """Two noisy views of random 16x16 images, as ``((view1, view2), index)``."""

    def __init__(self, n: int = 64) -> None:
        self.x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        x = self.x[i]
        return (x + 0.1 * torch.randn_like(x), x.flip(-1) + 0.1 * torch.randn_like(x)), i


def main(max_steps: int = 4, lightning: Any = pl) -> Any:
    model = make_simclr_class(lightning.LightningModule)()
    trainer = lightning.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(RandomPairs(), batch_size=16, shuffle=True))
    for step, h in enumerate(model.history):
        print(
            f"step {step}: SimCLR {h['simclr']:.4f} + λ·L_CLD {h['weight']:.2f}·{h['cld']:.4f}"
            f" = {h['loss']:.4f}"
        )
    return model


if __name__ == "__main__":
    main()
