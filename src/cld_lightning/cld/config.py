"""Validated settings of the CLD group branch (Hydra group ``cld``)."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any

from cld_lightning.cld.heads import HEAD_KINDS

CLUSTER_SCOPES = ("local", "global")
KMEANS_INITS = ("first", "kmeans++")
INT_FIELDS = ("num_clusters", "num_iters", "out_dim")
NUMBER_FIELDS = ("weight", "temperature", "warmup_epochs")


@dataclass
class CLDConfig:
    """CLD hyper-parameters; defaults follow the reference NPID+CLD CIFAR-10 recipe.

    Attributes:
        enabled: add the group branch and ``λ·L_CLD``.
        weight: ``λ``, the weight of ``L_CLD`` in ``L = L_instance + λ·L_CLD``.
        num_clusters: ``k`` local groups per view and mini-batch.
        temperature: ``τ_G`` of the cross-level logits.
        num_iters: Lloyd iterations of the batch k-means.
        head: group head ``f_G``: linear | mlp | normlinear | normmlp.
        hidden_dim: hidden width for mlp heads (``None``: the feature dimension).
        share_hidden: with an mlp/normmlp group head next to an mlp/normmlp instance head, reuse
            the instance head's hidden ``Linear + ReLU`` (one layer, the same parameters), as the
            reference ImageNet models do; ``False`` = the group head owns its hidden layer
            (option). No effect for linear heads or when the module offers no hidden layer.
        out_dim: dimension of ``g``.
        detach_centroids: option; stop gradients through the centroids (not the reference).
        kmeans_init: ``first`` (reference) or ``kmeans++`` (option).
        spherical: option; cosine k-means with re-normalised centroids.
        cluster_scope: ``local`` (reference: per process) or ``global`` (gathered over processes).
        warmup_epochs: option; linear λ warm-up over this many epochs (0 = off, reference).
    """

    enabled: bool = True
    weight: float = 1.0
    num_clusters: int = 128
    temperature: float = 0.2
    num_iters: int = 5
    head: str = "linear"
    hidden_dim: int | None = None
    share_hidden: bool = True
    out_dim: int = 128
    detach_centroids: bool = False
    kmeans_init: str = "first"
    spherical: bool = False
    cluster_scope: str = "local"
    warmup_epochs: float = 0.0

    def __post_init__(self) -> None:
        for name in INT_FIELDS + NUMBER_FIELDS + ("hidden_dim",):
            value = getattr(self, name)
            integral = name in INT_FIELDS or name == "hidden_dim"
            kind = numbers.Integral if integral else numbers.Real
            if (value is None and name == "hidden_dim") or (
                isinstance(value, kind) and not isinstance(value, bool)
            ):
                continue
            expected = "an integer" if integral else "a number"
            raise ValueError(f"cld.{name} must be {expected}, got {value!r}")
        checks = [
            (self.weight >= 0, "cld.weight (λ) must be >= 0", self.weight),
            (self.num_clusters >= 1, "cld.num_clusters (k) must be >= 1", self.num_clusters),
            (self.temperature > 0, "cld.temperature (τ_G) must be > 0", self.temperature),
            (self.num_iters >= 1, "cld.num_iters must be >= 1", self.num_iters),
            (self.out_dim >= 1, "cld.out_dim must be >= 1", self.out_dim),
            (self.head in HEAD_KINDS, f"cld.head must be one of {HEAD_KINDS}", self.head),
            (
                self.kmeans_init in KMEANS_INITS,
                f"cld.kmeans_init must be one of {KMEANS_INITS}",
                self.kmeans_init,
            ),
            (
                self.cluster_scope in CLUSTER_SCOPES,
                f"cld.cluster_scope must be one of {CLUSTER_SCOPES}",
                self.cluster_scope,
            ),
            (self.warmup_epochs >= 0, "cld.warmup_epochs must be >= 0", self.warmup_epochs),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}, got {value!r}")

    @classmethod
    def from_any(cls, value: CLDConfig | dict[str, Any] | None) -> CLDConfig:
        """Accept a ``CLDConfig``, a plain/OmegaConf mapping, or ``None`` (CLD off)."""
        if value is None:
            return cls(enabled=False)
        if isinstance(value, cls):
            return value
        data = dict(value)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"cld: unknown key(s) {', '.join('cld.' + k for k in unknown)}; "
                f"valid keys are {sorted(known)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
