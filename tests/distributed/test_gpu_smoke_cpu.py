"""scripts/gpu_smoke.py runs end to end in its quick CPU mode; compile option (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "scripts" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_gpu_smoke_quick_cpu_mode(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))
    rc = _load_script().main(
        [
            "--device",
            "cpu",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--width",
            "4",
            "--precisions",
            "bf16-mixed",
        ]
    )
    summary = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert rc == 0 and summary["ok"]
    assert [(r["precision"], r["strategy"]) for r in summary["runs"]] == [
        ("bf16-mixed", "auto"),
        ("32-true", "ddp"),
    ]
    for r in summary["runs"]:
        assert (
            r["steps"] == 2 and r["cld_loss_dtypes"] == ["float32"] and r["nonfinite_losses"] == 0
        )


@pytest.mark.slow
def test_compile_backbone_trains() -> None:
    from tests.helpers import TinyDataModule, make_npid, quiet_trainer

    model = make_npid(compile_backbone=True)
    keys = set(model.state_dict())
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, datamodule=TinyDataModule())
    assert trainer.global_step == 2 and set(model.state_dict()) == keys  # names unchanged
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
