"""Shared helper of the benchmark scripts: run `cld-train` in a subprocess, read metrics.json."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_train(overrides: list[str], out_dir: Path, log_file: Path | None = None) -> dict:
    """One `cld-train` run with `overrides`; returns its metrics plus the command and wall time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        *overrides,
        f"hydra.run.dir={out_dir}",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]
    cmd = [sys.executable, "-m", "cld_lightning.app.train", *args]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"}
    )
    wall = time.perf_counter() - start
    if log_file is not None:
        log_file.write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"run failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}"
        )
    metrics = json.loads((out_dir / "metrics.json").read_text())
    metrics["command"] = "cld-train " + shlex.join(overrides)
    metrics["wall_s"] = round(wall, 1)
    return metrics
