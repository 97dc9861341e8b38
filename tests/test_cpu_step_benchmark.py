"""benchmarks/cpu_step.py --quick: JSON structure, step-0 losses agree across layouts/precisions.

One subprocess run (~15 s on an idle 2-core CPU, ~35 s under load): batch 16, width 8, k 8, one
round, one timed step per configuration. Without the reference mirror the ``reference``
configuration is skipped and the rest is still checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cpu_step.py"
OURS = ("ours_fp32_nchw", "ours_fp32_channels_last", "ours_bf16_channels_last")
FLOORS = ("backbone_floor", "backbone_floor_bf16_channels_last")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cpu_step_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_quick_run_json_and_step0_losses(tmp_path: Path) -> None:
    out = tmp_path / "cpu_step.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in ("command", "date", "torch", "machine", "settings", "results", "ratios", "targets"):
        assert key in data, key
    assert "--quick" in data["command"]
    assert data["machine"]["torch_threads"] >= 1
    assert data["settings"]["batch"] == 16 and data["settings"]["width"] == 8
    assert data["recipe_default"]["experiment"] == "cifar10_npid_cld"
    assert data["recipe_default"]["config"] in data["results"]
    results = data["results"]
    for name in (*OURS, *FLOORS):
        r = results[name]
        assert "skipped" not in r, (name, r)
        assert r["step_time_s"] > 0 and r["img_per_s"] > 0
        assert r["peak_rss_mb"] > 0 and r["threads"] == 1
        assert math.isfinite(r["loss0"]["loss"])
    for name in OURS:
        assert set(results[name]["loss0"]) >= {"loss", "instance_loss"}
        assert results[name]["dtypes"]["cld_loss"] == "torch.float32"
        assert results[name]["dtypes"]["centroids"] == "torch.float32"
    base = results["ours_fp32_nchw"]["loss0"]["loss"]
    assert _rel(results["ours_fp32_channels_last"]["loss0"]["loss"], base) < 1e-4
    assert _rel(results["ours_bf16_channels_last"]["loss0"]["loss"], base) < 5e-2
    probe = data["bf16_dtype_probe"]
    assert probe["backbone_features"] == "torch.bfloat16"  # autocast was on
    for key in ("npid_logits", "instance_loss", "kmeans_centroids", "cld_loss"):
        assert probe[key] == "torch.float32", key
    ref = results["reference"]
    if "skipped" in ref:
        assert "mirror" in ref["skipped"]
        return
    # the reference step, started from our weights and bank, computes the same loss
    assert _rel(ref["loss0"]["loss"], base) < 1e-4
    assert _rel(ref["loss0"]["cld_loss"], results["ours_fp32_nchw"]["loss0"]["cld_loss"]) < 1e-4
    for name in OURS:
        assert data["ratios"]["speedup_vs_reference"][name] > 0
        assert data["ratios"]["rss_vs_reference"][name] > 0
    assert data["targets"]["speedup"] is not None


def test_summary_without_reference() -> None:
    bench = _load()
    args = argparse.Namespace(batch=4, views=2)
    row = {
        "step_times_s": [0.5, 0.7],
        "warmup_times_s": [1.0],
        "loss0": {"loss": 2.0},
        "peak_rss_mb": 100.0,
        "step_peak_rss_mb": 10.0,
        "rss_before_step_mb": 90.0,
        "threads": 1,
    }
    runs = {
        "reference": [{"error": "reference mirror not found at /nowhere"}],
        "ours_fp32_nchw": [row],
        "ours_fp32_channels_last": [{**row, "step_times_s": [0.4]}],
        "backbone_floor": [row],
    }
    results, ratios = bench.summarise(runs, args)
    assert "mirror" in results["reference"]["skipped"]
    assert results["ours_fp32_nchw"]["step_time_s"] == 0.6
    assert results["ours_fp32_nchw"]["img_per_s"] == 4 / 0.6
    assert ratios["speedup_vs_reference"] == {}
    assert ratios["over_floor"]["ours_fp32_nchw/backbone_floor"] == 1.0
    assert ratios["loss0_rel_diff_vs_ours_fp32_nchw"]["ours_fp32_channels_last"] == 0.0
    target = bench.targets(results, ratios, {"config": "ours_fp32_channels_last"})
    assert target["met"] is None
