"""An honest verdict on a run: does the learned representation beat its two baselines?

CLD.md §3 asks for every kNN figure to be shown beside raw pixels and the same network untrained
(same protocol). This module turns those figures into a plain statement and, when the learned
figure is **at or below** a baseline, advice that depends on the run's configuration.

Rule (``protocol="knn"``; ``"linear"`` the same with the ``linear/*`` keys):

- ``below_pixels``    = ``knn/top1 <= knn/pixel_top1``
- ``below_untrained`` = ``knn/top1 <= max(knn/random_init_top1, knn/random_init_backbone_top1)``
  (linear: ``linear/top1 <= linear/random_init_top1``)

A flag is ``None`` (and left out of :meth:`Verdict.flags`) when its baseline is missing or NaN; no
verdict at all when the learned figure is missing. Pure functions on plain dicts: no Lightning, no
Hydra.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# (learned key, pixel keys, untrained keys) per protocol; several keys: their maximum
PROTOCOLS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "knn": (
        "knn/top1",
        ("knn/pixel_top1",),
        ("knn/random_init_top1", "knn/random_init_backbone_top1"),
    ),
    "linear": ("linear/top1", ("linear/pixel_top1",), ("linear/random_init_top1",)),
}
PROTOCOL_NAMES = {"knn": "weighted kNN", "linear": "linear probe"}
# fewer optimiser steps than this: "more steps" comes first (the Fashion-MNIST main job, 84 % kNN,
# takes 14 epochs x 468 steps = 6,552 steps at batch 128; one such epoch gives about 77 %)
FEW_STEPS = 5000
MAIN_JOB_STEPS = 6552
# instance temperatures above this: suggest 0.1 (+2.2 points over 0.2 in 3-epoch F-MNIST probes)
HIGH_TEMPERATURE = 0.1
# RandomResizedCrop lower bounds below this: suggest a narrower range (0.5-0.7)
AGGRESSIVE_CROP = 0.5


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`verdict`; ``summary`` is one plain sentence, ``advice`` what usually
    helps (empty when the learned figure beats both baselines)."""

    protocol: str
    learned: float | None
    pixels: float | None
    untrained: float | None
    below_pixels: bool | None
    below_untrained: bool | None
    summary: str
    advice: tuple[str, ...] = field(default=())

    @property
    def available(self) -> bool:
        """A learned figure and at least one baseline were there to compare."""
        return self.below_pixels is not None or self.below_untrained is not None

    @property
    def below(self) -> bool:
        """At or below at least one baseline."""
        return bool(self.below_pixels) or bool(self.below_untrained)

    def flags(self, prefix: str = "verdict/") -> dict[str, float]:
        """Numeric flags (0.0 / 1.0) for ``metrics.json``; only the baselines that were present."""
        out: dict[str, float] = {}
        if self.below_pixels is not None:
            out[f"{prefix}below_pixels"] = float(self.below_pixels)
        if self.below_untrained is not None:
            out[f"{prefix}below_untrained"] = float(self.below_untrained)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``verdict.json``)."""
        return {
            "protocol": self.protocol,
            "learned": self.learned,
            "pixels": self.pixels,
            "untrained": self.untrained,
            "below_pixels": self.below_pixels,
            "below_untrained": self.below_untrained,
            "verdict": self.summary,
            "advice": list(self.advice),
        }

    def lines(self, indent: str = "  ") -> list[str]:
        """Printable lines: the sentence, then one ``- advice`` line each."""
        out = [f"{indent}{self.summary}"]
        if self.advice:
            out.append(f"{indent}what usually helps:")
            out += [f"{indent}  - {a}" for a in self.advice]
        return out


def _value(metrics: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    vals = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
            vals.append(float(v))
    return max(vals) if vals else None


def _method_name(method: Any) -> str | None:
    """``"npid"`` from ``"npid"``, ``"NPID"`` or a ``_target_`` ``cld_lightning.methods.NPID``."""
    if not isinstance(method, str) or not method:
        return None
    return method.rsplit(".", 1)[-1].lower()


def run_context(
    config: Mapping[str, Any] | None, global_step: int | None = None, epoch: int | None = None
) -> dict[str, Any]:
    """The run facts :func:`verdict` uses, from a resolved ``cld-train`` config (plain dict) and
    the trainer's (or checkpoint's) step and epoch counts; missing entries are simply absent."""
    config = config or {}
    method = config.get("method") or {}
    data = config.get("data") or {}
    cld = config.get("cld") or {}
    trainer = config.get("trainer") or {}
    ctx: dict[str, Any] = {}
    if (name := _method_name(method.get("_target_"))) is not None:
        ctx["method"] = name
    if isinstance(method.get("temperature"), int | float):
        ctx["temperature"] = float(method["temperature"])
    if isinstance(data.get("crop_min_scale"), int | float):
        ctx["crop_min_scale"] = float(data["crop_min_scale"])
    if isinstance(data.get("batch_size"), int):
        ctx["batch_size"] = int(data["batch_size"])
    if "enabled" in cld:
        ctx["cld"] = bool(cld["enabled"])
    for key in ("max_epochs", "max_steps"):  # -1 / None: not the limit of this run
        if isinstance(trainer.get(key), int) and trainer[key] > 0:
            ctx[key] = int(trainer[key])
    if global_step is not None:
        ctx["steps"] = int(global_step)
    if epoch is not None:
        ctx["epochs"] = int(epoch)
    return ctx


def advice_for(context: Mapping[str, Any]) -> tuple[str, ...]:
    """What usually lifts a representation above its baselines, most likely first, made specific
    to the run where ``context`` (see :func:`run_context`) says enough."""
    steps = context.get("steps")
    epochs = context.get("epochs")
    batch = context.get("batch_size")
    method = _method_name(context.get("method"))
    out: list[str] = []
    # the knobs that set the length of this run, with their values
    if context.get("max_steps") is not None:
        length = f"trainer.max_steps={context['max_steps']}"
    elif context.get("max_epochs") is not None:
        length = f"trainer.max_epochs={context['max_epochs']}"
    else:
        length = "trainer.max_epochs"
    knobs = f"raise {length}" + (f" or lower data.batch_size={batch}" if batch else "")
    ran = f"{steps:,} optimiser steps" if steps is not None else ""
    if steps is not None and epochs is not None:
        ran += f" in {epochs} epoch{'s' if epochs != 1 else ''}"
    if steps is not None and steps < FEW_STEPS:
        out.append(
            f"more optimiser steps: this run took only {ran}; contrastive learners need "
            f"thousands (the Fashion-MNIST main job takes {MAIN_JOB_STEPS:,}: 14 epochs at batch "
            f"128): {knobs}"
        )
    elif steps is not None:
        out.append(f"more epochs: this run took {ran}: {knobs}")
    else:
        out.append(f"more optimiser steps / more epochs: {knobs}")
    if method == "npid":
        out.append(
            "MoCo instead of NPID (method=moco, e.g. experiment=fashion_mnist_moco_cld): NPID's "
            "memory bank is refreshed once an epoch, so it learns slowly early and can sit below "
            "the untrained network for several epochs (one 60k Fashion-MNIST epoch: NPID+CLD "
            "70 %, MoCo+CLD 77 %)"
        )
    if context.get("cld") is False and method in ("npid", "moco", None):
        out.append(
            "CLD on (cld=on): on a short NPID budget it was the one change that lifted NPID "
            "above the untrained network (+8.5 points, benchmarks/npid_ablation.py)"
        )
    temperature = context.get("temperature")
    if temperature is not None and temperature > HIGH_TEMPERATURE:
        out.append(
            f"a lower instance temperature: method.temperature={temperature:g} -> 0.1 (0.1 was "
            "+2.2 points over 0.2 in 3-epoch Fashion-MNIST probes)"
        )
    crop = context.get("crop_min_scale")
    if crop is not None and crop < AGGRESSIVE_CROP:
        out.append(
            f"a smaller crop-scale range (milder crops): data.crop_min_scale={crop:g} -> 0.5-0.7 "
            "(short Fashion-MNIST MoCo runs: 0.5 beat 0.3 by 2 points, 0.7 beat 0.5 by 0.9)"
        )
    return tuple(out)


def _fmt(name: str, value: float, learned: float) -> str:
    return f"{name} ({value:.2f} %, {learned - value:+.2f} pts)"


def verdict(
    metrics: Mapping[str, Any], context: Mapping[str, Any] | None = None, protocol: str = "knn"
) -> Verdict:
    """Compare the learned figure of ``protocol`` (``"knn"`` or ``"linear"``) with its raw-pixel
    and untrained-network baselines in ``metrics``; ``context`` (:func:`run_context`) tailors
    the advice. See the module docstring for the rule."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    learned_key, pixel_keys, untrained_keys = PROTOCOLS[protocol]
    what = PROTOCOL_NAMES[protocol]
    learned = _value(metrics, (learned_key,))
    pixels = _value(metrics, pixel_keys)
    untrained = _value(metrics, untrained_keys)
    if learned is None:
        return Verdict(
            protocol, None, pixels, untrained, None, None, f"no {what} figure: no verdict"
        )
    below_pixels = None if pixels is None else learned <= pixels
    below_untrained = None if untrained is None else learned <= untrained
    if below_pixels is None and below_untrained is None:
        return Verdict(
            protocol,
            learned,
            None,
            None,
            None,
            None,
            f"no baselines beside the {what} figure ({learned:.2f} %): no verdict",
        )
    below = []
    above = []
    if untrained is not None:
        (below if below_untrained else above).append(
            _fmt("the untrained network", untrained, learned)
        )
    if pixels is not None:
        (below if below_pixels else above).append(_fmt("raw pixels", pixels, learned))
    if not below:
        summary = f"verdict: the learned {what} ({learned:.2f} %) beats " + " and ".join(above)
        return Verdict(
            protocol, learned, pixels, untrained, below_pixels, below_untrained, summary + "."
        )
    summary = (
        f"VERDICT: the learned {what} ({learned:.2f} %) is AT OR BELOW "
        + " and ".join(below)
        + ": this run has not learned a representation better than "
        + (
            "either baseline"
            if len(below) == 2
            else ("the untrained network" if below_untrained else "raw pixels")
        )
    )
    if above:
        summary += " (it does beat " + " and ".join(above) + ")"
    return Verdict(
        protocol,
        learned,
        pixels,
        untrained,
        below_pixels,
        below_untrained,
        summary + ".",
        advice_for(context or {}),
    )
