"""scripts/gpu_throughput.py executes end to end in its tiny CPU ``--smoke`` mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    path = ROOT / "scripts" / "gpu_throughput.py"
    spec = importlib.util.spec_from_file_location("gpu_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_gpu_throughput_smoke_mode_writes_every_run(tmp_path) -> None:
    out = tmp_path / "gpu_throughput.json"
    # --profile-below 1000: every loop mode counts as "below model-only", so each is profiled
    rc = _load_script().main(
        ["--smoke", "--precisions", "bf16-mixed", "--profile-below", "1000", "--out", str(out)]
    )
    summary = json.loads(out.read_text())
    runs = [(r["workload"], r["method"], r["mode"]) for r in summary["runs"]]
    assert runs == [
        ("cifar", "npid", "model_only"),
        ("cifar", "npid", "loader"),
        ("cifar", "npid", "gpu"),
        ("cifar", "moco", "model_only"),
        ("cifar", "moco", "loader"),
        ("cifar", "moco", "gpu"),
        ("jpeg", "npid", "model_only"),
        ("jpeg", "npid", "loader"),
        ("jpeg", "npid", "gpu"),
        ("jpeg", "npid", "torchvision"),
    ], [r.get("error") for r in summary["runs"]]
    assert rc == 0 and summary["ok"], [r.get("traceback") for r in summary["runs"]]
    assert summary["dali"].startswith("not measured")
    for r in summary["runs"]:
        assert r["finite"] and r["images_per_s"] > 0 and r["measured_steps"] == 2, r
        assert r["views"] == (3 if r["method"] == "moco" else 2)
        assert r["peak_mem_gib"] is None and r["channels_last"] is False  # CPU: no CUDA memory
        if r["mode"] == "model_only":
            assert r["vs_model_only"] == 1.0 and "profile" not in r
        else:
            model_only = next(
                m["images_per_s"]
                for m in summary["runs"]
                if (m["workload"], m["method"], m["mode"])
                == (r["workload"], r["method"], "model_only")
            )
            assert r["vs_model_only"] == pytest.approx(r["images_per_s"] / model_only, rel=1e-2)
            prof = r["profile"]
            assert prof["sort_by"] == "cpu_time_total" and prof["profiled_step_ms"] > 0
            assert 0 < len(prof["top_ops"]) <= 15 and "Name" in prof["table"]
            cpu_ms = [op["cpu_total_ms"] for op in prof["top_ops_by_cpu_time"]]
            assert cpu_ms == sorted(cpu_ms, reverse=True)
    decoders = {r["mode"]: r["decoder"] for r in summary["runs"] if r["workload"] == "jpeg"}
    assert decoders["torchvision"] == "torchvision" and decoders["gpu"] == "pil"


def test_gpu_throughput_profiles_only_below_the_threshold(tmp_path) -> None:
    out = tmp_path / "noprof.json"
    rc = _load_script().main(
        ["--smoke", "--only", "cifar", "--methods", "npid", "--modes", "model_only,gpu"]
        + ["--precisions", "bf16-mixed", "--profile-below", "0", "--out", str(out)]
    )
    runs = json.loads(out.read_text())["runs"]
    assert rc == 0 and [(r["method"], r["mode"]) for r in runs] == [
        ("npid", "model_only"),
        ("npid", "gpu"),
    ]
    assert all("profile" not in r for r in runs)


def test_gpu_throughput_budget_skips_the_remaining_modes(tmp_path) -> None:
    out = tmp_path / "skipped.json"
    rc = _load_script().main(["--smoke", "--only", "cifar", "--budget-s", "0", "--out", str(out)])
    summary = json.loads(out.read_text())
    # 2 methods x 2 precisions x 3 modes
    assert rc == 0 and len(summary["runs"]) == 12
    assert all(r["skipped"].startswith("time budget") for r in summary["runs"])


def test_gpu_throughput_rejects_an_unknown_mode() -> None:
    with pytest.raises(SystemExit):
        _load_script().main(["--smoke", "--modes", "model_only,nvjpeg"])
