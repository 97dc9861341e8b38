"""The main job (`make train` = ``cld-train experiment=fashion_mnist_moco_cld``) under each CPU
class, with the recipe's ``auto`` precision and layout: wall time, images/s, final kNN and what
``auto`` chose, one run per class, written to ``benchmarks/results/main_job_cpu_classes.json``
after each run (a later invocation replaces only the classes it runs).

CPU classes: ``native`` (this machine as it is) and ``avx2_emulated``
(``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``: an AVX2-only CPU without native bf16; see
docs/OPERATIONS.md "Checking portability anywhere"). Run it on a quiet machine: the full main job
takes 7-13 minutes per class on 2 cores. ``--overrides`` shortens it for a check, e.g.
``--overrides trainer.max_steps=60 trainer.max_epochs=-1 final_knn=false baselines=false``.

    python benchmarks/main_job_cpu_classes.py                      # both classes, full job
    python benchmarks/main_job_cpu_classes.py --classes avx2_emulated
    python benchmarks/main_job_cpu_classes.py --compare-steps 20 --rounds 2   # step times only

``--compare-steps N``: instead of the full job, short runs of N steps of the main job per class
and precision/layout setting (``COMPARE``: ``auto``, the recipe as it was before ``auto`` =
bf16-mixed + channels_last, and the alternatives), interleaved over ``--rounds`` (round r rotates
the order); each run's median training-step time after 3 warm-up steps
(``benchmarks/_step_timer.py``), stored under ``step_comparison``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cld_lightning.app.device_choice import CPU_CLASSES

HERE = Path(__file__).resolve().parent


def median_step_s(path: Path, skip: int) -> float | None:
    """Median training-step seconds of a :class:`_step_timer.StepTimer` file, after ``skip``
    warm-up steps (oneDNN builds its kernels in the first ones)."""
    if not path.exists():
        return None
    times = json.loads(path.read_text())["step_s"][skip:]
    return statistics.median(times) if times else None


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "main_job_cpu_classes.json"
CLASSES = CPU_CLASSES
EXPERIMENT = "fashion_mnist_moco_cld"
TRAIN_IMAGES = 60_000


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def trained_steps(run_dir: Path) -> int | None:
    """The global step of the run's newest checkpoint (None without one)."""
    from cld_lightning.app.checkpoints import read_checkpoint

    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return int(read_checkpoint(ckpts[-1])["global_step"]) if ckpts else None


def run_class(name: str, overrides: list[str], out_root: Path, timeout_s: int) -> dict[str, Any]:
    """One ``cld-train`` of the main job under CPU class ``name``; its record."""
    import yaml

    run_dir = out_root / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [
        str(Path(sys.executable).with_name("cld-train")),
        f"experiment={EXPERIMENT}",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    env = {**os.environ, **CLASSES[name]}
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        returncode: int | str = proc.returncode
        tail = (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired as err:
        returncode, tail = "timeout", str(err.output or "")[-2000:]
    wall = time.perf_counter() - start
    metrics_path, device_path = run_dir / "metrics.json", run_dir / ".hydra" / "device.yaml"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    device = yaml.safe_load(device_path.read_text()) if device_path.exists() else None
    steps = trained_steps(run_dir)
    batch = 128  # the recipe's data.batch_size (an override below replaces it)
    for o in overrides:
        if o.startswith("data.batch_size="):
            batch = int(o.split("=", 1)[1])
    return {
        "env": CLASSES[name],
        "command": " ".join(cmd[1:]),
        "returncode": returncode,
        "wall_s": round(wall, 1),
        "wall": f"{int(wall // 60)} min {wall % 60:.0f} s",
        "steps": steps,
        "images_per_s": round(steps * batch / wall, 1) if steps else None,
        "knn_top1": metrics.get("knn/top1"),
        "final": {k: v for k, v in metrics.items() if k.startswith(("knn/", "device/"))},
        "device": device,
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "output_tail": tail if returncode != 0 else "",
    }


#: --compare-steps: per class, name -> overrides (``before``: the recipe before ``auto``)
BEFORE = [
    "trainer.precision=bf16-mixed",
    "method.channels_last=true",
    "backbone.channels_last=true",
]
COMPARE: dict[str, dict[str, list[str]]] = {
    "native": {
        "auto": [],
        "before_bf16_channels_last": BEFORE,
        "fp32": ["trainer.precision=32-true"],
    },
    "avx2_emulated": {
        "auto": [],
        "bf16_mixed": ["trainer.precision=bf16-mixed"],
        "before_bf16_channels_last": BEFORE,
        "fp32_channels_last": ["trainer.precision=32-true", "method.channels_last=true"],
    },
}
SHORT = ["final_knn=false", "baselines=false", "selection.enabled=false", "plots.enabled=false"]


def compare_steps(steps: int, rounds: int, classes: list[str], runs_dir: Path) -> dict[str, Any]:
    """Short main-job runs per (class, setting), interleaved over ``rounds``; step times."""
    import yaml

    jobs = [(c, n) for c in classes for n in COMPARE[c]]
    times: dict[str, list[float | None]] = {f"{c}/{n}": [] for c, n in jobs}
    chosen: dict[str, Any] = {}
    loads = [round(os.getloadavg()[0], 2)]
    for r in range(rounds):
        for cls, name in jobs[r % len(jobs) :] + jobs[: r % len(jobs)]:
            run_dir = runs_dir / "steps" / cls / name
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [
                str(Path(sys.executable).with_name("cld-train")),
                f"experiment={EXPERIMENT}",
                f"hydra.run.dir={run_dir}",
                f"trainer.max_steps={steps}",
                "trainer.max_epochs=-1",
                "+callbacks.step_timer._target_=_step_timer.StepTimer",
                f"+callbacks.step_timer.path={run_dir / 'steps.json'}",
                "trainer.enable_progress_bar=false",
                "logger=none",
                *SHORT,
                *COMPARE[cls][name],
            ]
            path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
            env = {**os.environ, **CLASSES[cls], "PYTHONPATH": path}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            step = median_step_s(run_dir / "steps.json", skip=3)
            times[f"{cls}/{name}"].append(step)
            device = run_dir / ".hydra" / "device.yaml"
            if device.exists():
                chosen[f"{cls}/{name}"] = yaml.safe_load(device.read_text())
            loads.append(round(os.getloadavg()[0], 2))
            print(f"[compare] round {r} {cls}/{name}: {step} s/step (rc {proc.returncode})")
    out: dict[str, Any] = {"steps": steps, "rounds": rounds, "loadavg_1min": loads, "runs": {}}
    for key, values in times.items():
        ok = [v for v in values if v is not None]
        out["runs"][key] = {
            "step_s_per_round": values,
            "step_s_median": round(statistics.median(ok), 4) if ok else None,
            "steps_per_s": round(1 / statistics.median(ok), 3) if ok else None,
            "choice": {
                k: chosen.get(key, {}).get(k, {}).get("value")
                for k in ("precision", "channels_last")
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--classes", nargs="+", default=list(CLASSES), choices=list(CLASSES))
    p.add_argument("--overrides", nargs="*", default=[], help="extra cld-train overrides")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / "main_job_cpu_classes")
    p.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per class")
    p.add_argument("--compare-steps", type=int, default=0, help="N: step-time comparison only")
    p.add_argument("--rounds", type=int, default=2, help="--compare-steps rounds")
    args = p.parse_args(argv)

    import torch

    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.update(
        {
            "description": "cld-train experiment=fashion_mnist_moco_cld (precision and layout "
            "auto) per CPU class; images/s = optimiser steps x batch / wall time of the whole "
            "command (start-up and final evaluation included)",
            "machine": {
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "torch": torch.__version__,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            },
        }
    )
    result.setdefault("runs", {})
    if args.compare_steps:
        comparison = compare_steps(args.compare_steps, args.rounds, args.classes, args.runs_dir)
        comparison["date"] = time.strftime("%Y-%m-%d %H:%M")
        result["step_comparison"] = comparison
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return
    for name in args.classes:
        print(f"[main_job_cpu_classes] {name}: running", flush=True)
        record = run_class(name, args.overrides, args.runs_dir, args.timeout)
        record["date"] = time.strftime("%Y-%m-%d %H:%M")
        key = name if not args.overrides else f"{name}:{' '.join(args.overrides)}"
        result["runs"][key] = record
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(
            f"[main_job_cpu_classes] {name}: {record['wall']}, {record['images_per_s']} images/s, "
            f"kNN {record['knn_top1']}, rc {record['returncode']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
