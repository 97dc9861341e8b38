"""Precision and memory layout per device: decision tables over injected facts (no test depends
on the CPU it runs on), the channels_last guard, and what a run stores."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cld_lightning.app import device_choice
from cld_lightning.app.device_choice import (
    DeviceFacts,
    choose_channels_last,
    choose_precision,
    requested_layout,
    risky_convs,
)

BF16_CPU = DeviceFacts("cpu", "AVX512", None, mkldnn_bf16=True)
AVX512_NO_BF16 = DeviceFacts("cpu", "AVX512", None, mkldnn_bf16=False)  # e.g. Skylake-X
AVX2_CPU = DeviceFacts("cpu", "AVX2", None, mkldnn_bf16=False)
# ONEDNN_MAX_CPU_ISA alone: ATen still says AVX512, oneDNN is held at AVX2
EMULATED_ONEDNN = DeviceFacts("cpu", "AVX512", "AVX2", mkldnn_bf16=False)
# ATEN_CPU_CAPABILITY alone: oneDNN still reports bf16, ATen runs AVX2 kernels
EMULATED_ATEN = DeviceFacts("cpu", "AVX2", None, mkldnn_bf16=True)
V100 = DeviceFacts("cuda", "AVX512", None, True, cuda_capability=(7, 0))
T4 = DeviceFacts("cuda", "AVX2", None, False, cuda_capability=(7, 5))
A100 = DeviceFacts("cuda", "AVX2", None, False, cuda_capability=(8, 0))
P100 = DeviceFacts("cuda", "AVX2", None, False, cuda_capability=(6, 0))
MPS = DeviceFacts("mps", "DEFAULT", None, False)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (BF16_CPU, "bf16-mixed"),
        (AVX512_NO_BF16, "32-true"),
        (AVX2_CPU, "32-true"),
        (EMULATED_ONEDNN, "32-true"),
        (EMULATED_ATEN, "32-true"),
        (V100, "16-mixed"),
        (T4, "16-mixed"),
        (A100, "bf16-mixed"),
        (P100, "32-true"),
        (MPS, "32-true"),
    ],
)
def test_auto_precision_per_device(facts: DeviceFacts, expected: str) -> None:
    for requested in ("auto", None):
        choice = choose_precision(requested, facts)
        assert (choice.value, choice.requested) == (expected, "auto")
        assert choice.reason and choice.reason != "set explicitly"


@pytest.mark.parametrize("facts", [BF16_CPU, AVX2_CPU, V100, A100])
@pytest.mark.parametrize("explicit", ["32-true", "bf16-mixed", "16-mixed"])
def test_explicit_precision_wins(facts: DeviceFacts, explicit: str) -> None:
    choice = choose_precision(explicit, facts)
    assert (choice.value, choice.reason) == (explicit, "set explicitly")


def test_cpu_class_of_the_facts() -> None:
    assert BF16_CPU.cpu_avx512 and BF16_CPU.cpu_native_bf16
    assert not AVX2_CPU.cpu_avx512 and not AVX2_CPU.cpu_native_bf16
    assert not EMULATED_ONEDNN.cpu_avx512 and not EMULATED_ONEDNN.cpu_native_bf16
    assert not EMULATED_ATEN.cpu_avx512 and not EMULATED_ATEN.cpu_native_bf16
    # a limit that keeps AVX-512 (and bf16) is no emulation
    assert DeviceFacts("cpu", "AVX512", "AVX512_CORE_AMX", True).cpu_native_bf16
    assert A100.as_dict()["cuda_capability"] == "8.0" and BF16_CPU.as_dict()["kind"] == "cpu"


def _model(in_channels: int, stride: int = 2, kernel: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, in_channels, 3, padding=1),
        nn.Conv2d(in_channels, 8, kernel, stride=stride, bias=False),
    )


def test_risky_convs_found_by_walking_the_model() -> None:
    assert risky_convs(_model(4)) == ["1"]
    assert risky_convs(_model(7)) == ["1"]
    assert risky_convs(_model(8)) == []  # 8 input channels: not affected
    assert risky_convs(_model(4, stride=1)) == []
    assert risky_convs(_model(4, kernel=3)) == []
    assert risky_convs(nn.Conv2d(4, 8, 1, stride=(2, 2))) == ["Conv2d"]


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_choice, "_WARNED", set())


def test_channels_last_guard_falls_back_and_warns_once(fresh_warnings, caplog) -> None:
    risky = risky_convs(_model(4))
    caplog.set_level(logging.WARNING, logger="cld_lightning.app.device_choice")
    for facts in (AVX2_CPU, EMULATED_ONEDNN):
        forced = choose_channels_last(True, facts, risky)
        assert forced.value is False and forced.requested is True
        assert "jit_avx2_1x1_convolution_bwd_weights" in forced.reason and "1" in forced.reason
        auto = choose_channels_last("auto", facts, risky)
        assert auto.value is False and auto.requested == "auto"
    warned = [r for r in caplog.records if "channels_last=true ignored" in r.getMessage()]
    assert len(warned) == 2  # one per distinct CPU class, not one per call
    choose_channels_last(True, AVX2_CPU, risky)
    assert len([r for r in caplog.records if "ignored" in r.getMessage()]) == 2


def test_channels_last_not_guarded_where_safe(fresh_warnings, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="cld_lightning.app.device_choice")
    assert choose_channels_last(True, BF16_CPU, risky_convs(_model(4))).value is True
    assert choose_channels_last(True, AVX2_CPU, risky_convs(_model(8))).value is True
    assert choose_channels_last(True, V100, risky_convs(_model(4))).value is True  # cuDNN
    assert choose_channels_last(False, BF16_CPU, []).value is False
    assert not caplog.records


@pytest.mark.parametrize(
    ("facts", "expected"),
    [(BF16_CPU, True), (AVX512_NO_BF16, True), (AVX2_CPU, True), (EMULATED_ONEDNN, True)]
    + [(DeviceFacts("cpu", "DEFAULT"), False), (DeviceFacts("cpu", "AVX512", "AVX"), False)]
    + [(A100, True), (V100, True), (MPS, False)],
)
def test_auto_layout_per_device(facts: DeviceFacts, expected: bool) -> None:
    assert choose_channels_last("auto", facts, []).value is expected


def test_requested_layout_from_both_keys() -> None:
    assert requested_layout("auto", "auto") == "auto"
    assert requested_layout("auto", False) is False
    assert requested_layout(True, False) is True  # either key converted the backbone before
    assert requested_layout() == "auto"


def test_build_applies_the_layout(fresh_warnings) -> None:
    """The backbone is built NCHW, checked, then converted: the CIFAR ResNet-18 at width 4 has a
    1x1 stride-2 shortcut with 4 input channels, so an AVX2 CPU keeps it NCHW."""
    from cld_lightning.app.build import build_model_and_layout

    backbone = {
        "_target_": "cld_lightning.models.build_backbone",
        "name": "cifar_resnet18",
        "width": 4,
        "channels_last": "auto",
    }
    method = {"_target_": "cld_lightning.methods.MoCo", "queue_size": 16, "channels_last": True}
    meta = {"in_channels": 3, "num_train_samples": 32, "num_classes": 4, "image_size": 32}
    for facts, expected in ((AVX2_CPU, False), (BF16_CPU, True)):
        model, layout = build_model_and_layout(method, backbone, None, meta, facts)
        assert layout.value is expected and model.channels_last is expected
        weight = model.backbone.layer2[0].conv1.weight  # 3x3: the formats differ
        assert weight.is_contiguous(memory_format=torch.channels_last) is expected
    with pytest.raises(ValueError, match="backbone.channels_last must be true or false"):
        from cld_lightning.models import build_backbone

        build_backbone("small_cnn", channels_last="auto")  # type: ignore[arg-type]


def test_emulated_avx2_is_seen_as_avx2() -> None:
    """What torch reports under the AVX2 emulation (`make test-avx2`), on any x86 machine."""
    code = (
        "import json; from cld_lightning.app.device_choice import probe_device as p; "
        "f = p('cpu'); print(json.dumps([f.cpu_capability, f.onednn_max_isa, "
        "f.cpu_native_bf16, f.cpu_avx512]))"
    )
    env = {**os.environ, **device_choice.EMULATED_AVX2_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    cap, isa, bf16, avx512 = json.loads(out.stdout.strip().splitlines()[-1])
    assert isa == "AVX2" and bf16 is False and avx512 is False
    if cap != "DEFAULT":  # not an x86 build
        assert cap == "AVX2"


def test_run_stores_the_choice(compose_train, fake_data_root, monkeypatch) -> None:
    """A tiny run on an injected AVX2 CPU with `auto`: fp32 and NCHW, logged, stored in
    metrics.json, device.yaml and the checkpoint's config."""
    import yaml

    from cld_lightning.app import train as train_module
    from cld_lightning.app.checkpoints import read_checkpoint

    monkeypatch.setattr(train_module, "probe_device", lambda accelerator: AVX2_CPU)
    cfg = compose_train(
        "data=fashion_mnist",
        f"paths.data_dir={fake_data_root}",
        "data.download=false",
        "backbone=cifar_resnet18_small",
        "method=moco",
        "method.queue_size=16",
        "cld.num_clusters=4",
        "trainer.precision=auto",
        "trainer.max_steps=2",
        "trainer.max_epochs=-1",
        "selection.enabled=false",
        "plots.enabled=false",
        "baselines=false",
    )
    metrics = train_module.train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["device/precision_bits"] == 32.0 and saved["device/bf16"] == 0.0
    assert saved["device/channels_last"] == 0.0 and metrics["device/precision_bits"] == 32.0
    record = yaml.safe_load(
        next(
            p for p in (out / ".hydra" / "device.yaml", out / "device.yaml") if p.exists()
        ).read_text()
    )
    assert record["precision"] == {
        "value": "32-true",
        "requested": "auto",
        "reason": "CPU AVX2 without native bf16",
    }
    assert "jit_avx2_1x1_convolution_bwd_weights" in record["channels_last"]["reason"]
    ckpt = read_checkpoint(next((out / "checkpoints").glob("*.ckpt")))
    stored = ckpt["cld_lightning_config"]
    assert stored["trainer"]["precision"] == "32-true"
    assert (
        stored["backbone"]["channels_last"] is False and stored["method"]["channels_last"] is False
    )
    assert ckpt["cld_lightning_device"]["precision"]["reason"] == "CPU AVX2 without native bf16"


def test_typos_are_refused_naming_the_key(compose_train) -> None:
    from cld_lightning.app.build import build_layout_backbone
    from cld_lightning.app.config_check import check_train_config
    from cld_lightning.app.errors import ConfigError

    backbone = {"_target_": "cld_lightning.models.build_backbone", "name": "small_cnn"}
    with pytest.raises(ConfigError, match="method.channels_last must be true, false or auto"):
        build_layout_backbone({"channels_last": "ture"}, backbone, 1, AVX2_CPU)
    check_train_config(compose_train("trainer.precision=auto", "backbone.channels_last=auto"))
