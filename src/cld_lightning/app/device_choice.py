"""Precision and memory layout chosen per device (``trainer.precision: auto``,
``backbone.channels_last: auto``): pure decisions over injected :class:`DeviceFacts`.

:func:`probe_device` reads the facts of this machine; :func:`choose_precision` and
:func:`choose_channels_last` decide from the facts alone, so tests inject any machine class
(AVX2 laptop, avx512_bf16 server, V100, A100) without running on it. docs/OPERATIONS.md
"Precision and memory layout per device" gives the rules and the measurements behind them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

log = logging.getLogger("cld_lightning.app.device_choice")

AUTO = "auto"
#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN below AVX-512 (how an AVX2-only CPU is emulated)
BELOW_AVX512_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
#: the environment that makes any x86 machine run as an AVX2-only CPU without native bf16
#: (``make test-avx2``, the benchmarks' ``avx2_emulated`` class; docs/OPERATIONS.md)
EMULATED_AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
#: CPU classes the benchmarks run under: name -> environment variables
CPU_CLASSES: dict[str, dict[str, str]] = {"native": {}, "avx2_emulated": EMULATED_AVX2_ENV}


@dataclass(frozen=True)
class DeviceFacts:
    """What the decisions read about the device that will train.

    ``kind``: ``cpu`` | ``cuda`` | another accelerator name (``mps``...). ``cpu_capability``:
    ``torch.backends.cpu.get_cpu_capability()`` (``AVX512``, ``AVX2``, ``DEFAULT``...; honours
    ``ATEN_CPU_CAPABILITY``). ``onednn_max_isa``: the ``ONEDNN_MAX_CPU_ISA`` limit, if set.
    ``mkldnn_bf16``: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``. ``cuda_capability``: the
    lowest compute capability of the visible GPUs (``None`` off CUDA).
    """

    kind: str
    cpu_capability: str = "DEFAULT"
    onednn_max_isa: str | None = None
    mkldnn_bf16: bool = False
    cuda_capability: tuple[int, int] | None = None

    @property
    def cpu_avx512(self) -> bool:
        """oneDNN and ATen may use AVX-512 here (neither limited below it by the environment)."""
        limit = (self.onednn_max_isa or "").upper()
        return self.cpu_capability.upper() == "AVX512" and limit not in BELOW_AVX512_ISAS

    @property
    def cpu_avx2(self) -> bool:
        """oneDNN and ATen may use at least AVX2 here (AVX2-only or AVX-512)."""
        limit = (self.onednn_max_isa or "").upper()
        return self.cpu_capability.upper() in ("AVX2", "AVX512") and limit not in ("SSE41", "AVX")

    @property
    def cpu_native_bf16(self) -> bool:
        """bf16 arithmetic in hardware: oneDNN reports it and ATen is not held below AVX-512 (an
        x86 CPU at ``AVX2``/``DEFAULT`` emulates bf16, ~3-10x slower than fp32)."""
        cap = self.cpu_capability.upper()
        if not self.mkldnn_bf16 or cap in ("AVX2", "DEFAULT"):
            return False
        return cap != "AVX512" or self.cpu_avx512

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cuda_capability"] = (
            None if self.cuda_capability is None else ".".join(map(str, self.cuda_capability))
        )
        return out


@dataclass(frozen=True)
class Choice:
    """A decided value, whether it was asked for explicitly, and the reason (logged, stored)."""

    value: Any
    requested: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "requested": self.requested, "reason": self.reason}


def accelerator_kind(accelerator: str | None, cuda_available: bool, mps_available: bool) -> str:
    """The device kind a Lightning ``accelerator`` setting trains on (``auto``: CUDA, then MPS,
    then CPU, as Lightning picks)."""
    name = str(accelerator or AUTO).lower()
    if name in ("gpu", "cuda"):
        return "cuda"
    if name == AUTO:
        return "cuda" if cuda_available else "mps" if mps_available else "cpu"
    return name


def probe_device(accelerator: str | None = "cpu") -> DeviceFacts:
    """The facts of this machine for a Lightning ``accelerator`` setting."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    kind = accelerator_kind(
        accelerator, torch.cuda.is_available(), bool(mps and mps.is_available())
    )
    cuda_cc = None
    if kind == "cuda" and torch.cuda.is_available():
        cuda_cc = min(torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))
    return DeviceFacts(
        kind=kind,
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        onednn_max_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
        mkldnn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        cuda_capability=cuda_cc,
    )


def choose_precision(requested: str | int | None, facts: DeviceFacts) -> Choice:
    """``trainer.precision``: an explicit value wins; ``auto`` (or ``None``) is ``bf16-mixed``
    with native bf16 (CPU: :attr:`DeviceFacts.cpu_native_bf16`; CUDA: compute capability >= 8.0),
    ``16-mixed`` (fp16 with loss scaling) on CUDA 7.x (tensor cores, no bf16), else ``32-true``."""
    if requested is not None and str(requested) != AUTO:
        return Choice(str(requested), requested, "set explicitly")
    if facts.kind == "cuda":
        cc = facts.cuda_capability or (0, 0)
        shown = f"{cc[0]}.{cc[1]}"
        if cc >= (8, 0):
            return Choice("bf16-mixed", AUTO, f"CUDA compute capability {shown} has native bf16")
        if cc >= (7, 0):
            return Choice(
                "16-mixed",
                AUTO,
                f"CUDA compute capability {shown}: fp16 tensor cores, no native bf16 "
                "(fp16 autocast with loss scaling)",
            )
        return Choice("32-true", AUTO, f"CUDA compute capability {shown}: no tensor cores")
    if facts.kind == "cpu":
        if facts.cpu_native_bf16:
            return Choice(
                "bf16-mixed",
                AUTO,
                f"CPU {facts.cpu_capability} with native bf16 (oneDNN reports bf16 support)",
            )
        return Choice("32-true", AUTO, f"CPU {_cpu_class(facts)} without native bf16")
    return Choice("32-true", AUTO, f"{facts.kind}: no measured mixed-precision gain")


def _cpu_class(facts: DeviceFacts) -> str:
    limit = f", ONEDNN_MAX_CPU_ISA={facts.onednn_max_isa}" if facts.onednn_max_isa else ""
    return f"{facts.cpu_capability}{limit}"


def risky_convs(model: nn.Module) -> list[str]:
    """Names of the 1x1 stride-2 ``Conv2d`` layers with fewer than 8 input channels: their
    channels_last weight gradient corrupts memory in oneDNN's AVX2 kernel
    ``jit_avx2_1x1_convolution_bwd_weights`` (torch 2.14.1; docs/OPERATIONS.md)."""
    out = []
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Conv2d)
            and tuple(module.kernel_size) == (1, 1)
            and 2 in tuple(module.stride)
            and module.in_channels < 8
        ):
            out.append(name or type(module).__name__)
    return out


_WARNED: set[str] = set()


def choose_channels_last(
    requested: bool | str | None, facts: DeviceFacts, risky: list[str] | None = None
) -> Choice:
    """``backbone.channels_last``: ``auto`` is channels_last on CUDA and on a CPU with AVX2 or
    AVX-512 (measured faster there: docs/OPERATIONS.md), NCHW elsewhere. Any value (an explicit
    ``true`` too) falls back to NCHW on a CPU without AVX-512 when the model has ``risky``
    convolutions (:func:`risky_convs`); an overridden ``true`` is logged as a warning once per
    process and reason."""
    auto = requested is None or str(requested) == AUTO
    if facts.kind == "cpu" and not facts.cpu_avx512 and risky and (auto or bool(requested)):
        reason = (
            f"NCHW: CPU {_cpu_class(facts)} without AVX-512 and 1x1 stride-2 conv(s) with < 8 "
            f"input channels ({', '.join(risky[:3])}): oneDNN's AVX2 kernel "
            "jit_avx2_1x1_convolution_bwd_weights corrupts memory on them in channels_last "
            "(torch 2.14.1; docs/OPERATIONS.md)"
        )
        if not auto and reason not in _WARNED:
            _WARNED.add(reason)
            log.warning("channels_last=true ignored: %s", reason)
        return Choice(False, AUTO if auto else bool(requested), reason)
    if not auto:
        return Choice(bool(requested), bool(requested), "set explicitly")
    if facts.kind == "cuda":
        return Choice(True, AUTO, "CUDA: cuDNN's NHWC convolutions")
    if facts.kind == "cpu" and facts.cpu_avx512:
        return Choice(True, AUTO, "CPU with AVX-512: oneDNN's channels_last convolutions")
    if facts.kind == "cpu" and facts.cpu_avx2:
        return Choice(
            True,
            AUTO,
            f"CPU {_cpu_class(facts)}: oneDNN's AVX2 channels_last convolutions (no conv of "
            "the known AVX2 channels_last bug in this model)",
        )
    if facts.kind == "cpu":
        return Choice(False, AUTO, f"NCHW: CPU {_cpu_class(facts)} without AVX2")
    return Choice(False, AUTO, f"NCHW: {facts.kind}")


def requested_layout(*values: Any) -> bool | str:
    """One request from the layout keys (``backbone.channels_last``, ``method.channels_last``):
    ``True`` if any is true, ``False`` if any is false, else ``auto``."""
    given = [v for v in values if v is not None and str(v) != AUTO]
    if any(bool(v) for v in given):
        return True
    return False if given else AUTO


def apply_device_choices(cfg: Any, facts: DeviceFacts, layout: Choice) -> dict[str, Any]:
    """Write the resolved ``trainer.precision`` (:func:`choose_precision`) and the ``layout``
    (``backbone.channels_last``, ``method.channels_last``) into ``cfg`` before the Trainer and
    the stored configs are built; log both once. Returns the record kept in ``metrics.json``,
    checkpoints (``cld_lightning_device``) and ``.hydra/device.yaml``."""
    from omegaconf import open_dict

    precision = choose_precision(cfg.trainer.get("precision"), facts)
    with open_dict(cfg):
        cfg.trainer.precision = precision.value
        for group in ("backbone", "method"):
            if layout.value is not None and "channels_last" in cfg[group]:
                cfg[group].channels_last = bool(layout.value)
    log.info(
        "precision %s (%s); channels_last %s (%s)",
        precision.value,
        precision.reason,
        layout.value,
        layout.reason,
    )
    return {
        "precision": precision.as_dict(),
        "channels_last": layout.as_dict(),
        "facts": facts.as_dict(),
    }


def device_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The choices of :func:`apply_device_choices` as the floats ``metrics.json`` holds:
    ``device/precision_bits`` (16 or 32; 64 for ``64-true``), ``device/bf16`` and
    ``device/channels_last`` (0/1). The reasons are in ``.hydra/device.yaml``."""
    precision = str(record["precision"]["value"])
    bits = 64.0 if precision.startswith("64") else 32.0 if precision.startswith("32") else 16.0
    return {
        "device/precision_bits": bits,
        "device/bf16": float(precision.startswith("bf16")),
        "device/channels_last": float(bool(record["channels_last"]["value"])),
    }
