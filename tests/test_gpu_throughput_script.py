"""scripts/gpu_throughput.py executes end to end in its tiny CPU ``--smoke`` mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    path = ROOT / "scripts" / "gpu_throughput.py"
    spec = importlib.util.spec_from_file_location("gpu_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_gpu_throughput_smoke_mode_writes_every_run(tmp_path) -> None:
    out = tmp_path / "gpu_throughput.json"
    rc = _load_script().main(["--smoke", "--precisions", "bf16-mixed", "--out", str(out)])
    summary = json.loads(out.read_text())
    runs = [(r["workload"], r["mode"]) for r in summary["runs"]]
    assert runs == [
        ("cifar", "model_only"),
        ("cifar", "loader"),
        ("cifar", "gpu"),
        ("jpeg", "model_only"),
        ("jpeg", "loader"),
        ("jpeg", "gpu"),
        ("jpeg", "torchvision"),
    ], [r.get("error") for r in summary["runs"]]
    assert rc == 0 and summary["ok"], [r.get("traceback") for r in summary["runs"]]
    for r in summary["runs"]:
        assert r["finite"] and r["images_per_s"] > 0 and r["measured_steps"] == 2, r


def test_gpu_throughput_budget_skips_the_remaining_modes(tmp_path) -> None:
    out = tmp_path / "skipped.json"
    rc = _load_script().main(["--smoke", "--only", "cifar", "--budget-s", "0", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert rc == 0 and len(summary["runs"]) == 6
    assert all(r["skipped"].startswith("time budget") for r in summary["runs"])
