"""One prepared GPU check (issues 20, 25): ``make gpu-check``, under 9 minutes on one H200.

Parts, in this order, each in its own process with its own time budget; a part that fails is
recorded with its error (and the tail of its output) and the rest goes on:

1. ``main_job``: ``cld-train experiment=fashion_mnist_moco_cld trainer=gpu`` (precision auto) on the
   real Fashion-MNIST, read from ``--data-root`` (default ``.gpu_carry/fashion-mnist``, the Debian
   package's four ``*.gz`` files, copied there by ``make gpu-data``); wall time, the kNN next to
   raw pixels and the untrained network (``metrics.json`` of the run), epochs done;
2. ``precision_auto``: the main job for 300 steps (smoke: 4) with ``trainer.precision=auto``,
   then with an explicit ``bf16-mixed``: the precision and layout ``auto`` chose with their
   reasons, and each run's mean training-step time (SimpleProfiler), printed and stored;
3. ``throughput_cifar``: ``scripts/gpu_throughput.py --only cifar``: CIFAR ResNet-18 width 64,
   synthetic uint8 data, NPID+CLD 2 views and MoCo+CLD 3 crops, bf16-mixed, channels_last:
   model-only vs the loop with ``data.augment_on=gpu`` vs CPU loader workers, images/s, peak GPU
   memory, loop/model-only ratio; a loop below 0.9x model-only gets one step profiled;
4. ``decode_resnet50``: ``scripts/gpu_throughput.py --only jpeg``: ResNet-50 at 224 px on
   synthetic JPEGs, model-only, ``data.decoder=torchvision`` (nvJPEG) and ``data.decoder=pil``
   (PIL in workers, augmentation on the GPU; then all on the CPU loader);
5. ``main_job_3x`` (optional): the main job at 3x the epochs, run only when the time left is at
   least 3x the main job's wall time; otherwise recorded as skipped with the estimate.

DALI is not measured: its wheel is far larger than the 64 MiB a device call may carry.

    make gpu-check                                        # = python3 scripts/gpu_check.py
    python3 scripts/gpu_check.py --parts main_job_3x      # one part alone (a rerun)
    PYTHONPATH=src python scripts/gpu_check.py --smoke    # CPU dry run, tiny (the test), ~40 s
    python3 scripts/gpu_check.py --carry-size             # what a device call would carry

Without ``--smoke`` it needs CUDA: on a machine without an accelerator it prints
"gpu_check: no accelerator ..." and exits 2, running nothing and writing no JSON.
When ``import hydra`` fails it first installs the wheels in ``.whl/`` (``make gpu-wheels``) with
``pip install --no-index --no-deps --target /tmp/site`` and puts that folder and ``src/`` on the
parts' ``PYTHONPATH``.

Writes ONE JSON, after every part (a run cut short keeps the parts done): ``$OUT/gpu_check.json``
when ``$OUT`` is set, else ``benchmarks/results/gpu_check.json`` (``--out`` overrides).
Exit status: 0 every part ok or skipped, 1 a part failed or ran out of time, 2 no accelerator.
``--fail PART`` (or ``GPU_CHECK_FAIL=PART,...``) sabotages a part on purpose (the tests use it).
See docs/GPU_CHECK.md.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
DATA_ROOT = ROOT / ".gpu_carry" / "fashion-mnist"
WHEELS = ROOT / ".whl"
SITE = Path(os.environ.get("GPU_CHECK_SITE", "/tmp/site"))  # where .whl/ is installed
CARRY = (".whl", ".gpu_carry")
CARRY_LIMIT = 64 * 2**20
FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
EXPERIMENT = "fashion_mnist_moco_cld"
MODULE = "cld_lightning.app.train"  # cld-train
PARTS = ("main_job", "precision_auto", "throughput_cifar", "decode_resnet50", "main_job_3x")
OPTIONAL = ("main_job_3x",)
# seconds per part on one H200 (the optional part gets what is left of --budget-s)
BUDGETS = {
    "main_job": 220.0,
    "precision_auto": 60.0,
    "throughput_cifar": 120.0,
    "decode_resnet50": 110.0,
}
SMOKE_BUDGETS = {
    "main_job": 90.0,
    "precision_auto": 90.0,
    "throughput_cifar": 90.0,
    "decode_resnet50": 90.0,
}
TOTAL_BUDGET = 530.0
SMOKE_TOTAL_BUDGET = 390.0
# precision_auto: optimiser steps of each short main-job run (auto, then explicit bf16-mixed)
PRECISION_STEPS, SMOKE_PRECISION_STEPS = 300, 4
MIN_PART_S = 20.0  # a part is not started with less time than this left
# the main job's training stops (trainer.max_time) this long before its timeout, leaving time
# for start-up, the final kNN, label-free selection, baselines and plots
EVAL_RESERVE_S = 70.0
SMOKE_EVAL_RESERVE_S = 30.0
# gpu_throughput.py starts no new mode this long before its timeout (a mode in flight finishes)
THROUGHPUT_MARGIN_S = 30.0
SMOKE_THROUGHPUT_MARGIN_S = 20.0
# the main job on a tiny synthetic Fashion-MNIST on the CPU (--smoke)
SMOKE_MAIN_OVERRIDES = (
    "trainer=cpu",
    "data.batch_size=32",
    "data.val_batch_size=128",
    "cld.num_clusters=8",
    "method.queue_size=256",
    "plots.enabled=false",
    "selection.num_images=64",
    "trainer.check_val_every_n_epoch=1",
)
SMOKE_EPOCHS = 1
FORCED = "gpu_check_forced_failure"
DALI_NOTE = (
    "not measured: nvidia-dali's wheel is far larger than the 64 MiB a device call may carry "
    "(make gpu-check installs only what .whl/ holds); data.decoder=dali waits for a machine "
    "that has DALI installed"
)
LIGHTNING_MARKERS = (
    "Automatic Mixed Precision",
    "GPU available",
    "stopped:",
    "Time limit reached",
    "configuration error",
    "Error",
)


# ------------------------------------------------------------------ helpers
def _fmt_max_time(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _out_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else RESULTS


def experiment_epochs() -> int:
    """``trainer.max_epochs`` of the main job's recipe (14)."""
    import yaml

    path = SRC / "cld_lightning" / "conf" / "experiment" / f"{EXPERIMENT}.yaml"
    return int(yaml.safe_load(path.read_text())["trainer"]["max_epochs"])


def plan_optional(
    remaining_s: float, main_wall_s: float | None, factor: int = 3
) -> tuple[bool, str]:
    """Whether the optional 3x-epochs run fits: it needs ``factor`` x the main job's wall time
    (training and evaluation both scale no worse than that)."""
    if main_wall_s is None:
        return False, "no main_job wall time to size it (main_job did not finish)"
    need = factor * main_wall_s
    if remaining_s < need:
        return False, (
            f"time budget: needs ~{need:.0f} s ({factor} x main_job's {main_wall_s:.0f} s), "
            f"{remaining_s:.0f} s left; run it alone: make gpu-check GPU_CHECK_ARGS='--parts "
            "main_job_3x'"
        )
    return True, f"fits: ~{need:.0f} s needed, {remaining_s:.0f} s left"


def carry_sizes(root: Path = ROOT, carry: tuple[str, ...] = CARRY) -> dict[str, Any]:
    """Bytes a device call would send: tracked and untracked-not-ignored files, plus ``carry``."""

    def tree_bytes(path: Path) -> int:
        if path.is_symlink() or path.is_file():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())

    names = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    tree = 0
    for name in filter(None, names):
        p = root / os.fsdecode(name)
        if p.is_symlink() or p.is_file():
            tree += p.lstat().st_size
    carried = {c: (tree_bytes(root / c) if (root / c).exists() else None) for c in carry}
    total = tree + sum(v or 0 for v in carried.values())
    return {
        "working_tree_bytes": tree,
        "carried_bytes": carried,
        "total_bytes": total,
        "limit_bytes": CARRY_LIMIT,
        "fits": total <= CARRY_LIMIT,
    }


def ensure_hydra(site: Path = SITE) -> dict[str, Any]:
    """Import hydra/omegaconf, installing ``.whl/*.whl`` into ``site`` first when they are
    missing (the device machine has neither). Returns what was done; raises on failure."""
    try:
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401

        return {"wheels": "not needed (hydra and omegaconf import)"}
    except ImportError as err:
        missing = str(err)
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        raise RuntimeError(
            f"{missing}, and {WHEELS} holds no wheels: run `make gpu-wheels` on the development "
            "machine and name .whl in the device call's carry"
        )
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    cmd += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
    subprocess.run(cmd + [str(w) for w in wheels], check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    import hydra  # noqa: F401, F811

    return {"wheels": [w.name for w in wheels], "site": str(site)}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("torch", "torchvision", "pytorch_lightning", "hydra", "omegaconf", "numpy"):
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing package is a finding, not a crash
            out[name] = None
    return out


def run_child(
    name: str, cmd: list[str], timeout: float, env: dict[str, str], tail: int = 60
) -> dict[str, Any]:
    """Run ``cmd`` in its own process group, echo its output prefixed by ``[name]``, keep the last
    ``tail`` lines; on ``timeout`` the whole group is ended (SIGTERM, then SIGKILL)."""
    t0 = time.perf_counter()
    lines: collections.deque[str] = collections.deque(maxlen=tail)
    marked: list[str] = []
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if any(m in line for m in LIGHTNING_MARKERS) and len(marked) < 20:
                marked.append(line.strip()[:300])
            print(f"[{name}] {line}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=10)
    return {
        "rc": proc.returncode,
        "timed_out": timed_out,
        "wall_s": round(time.perf_counter() - t0, 1),
        "tail": list(lines),
        "marked": marked,
    }


# ------------------------------------------------------------------ parts
class Check:
    """State shared by the parts: options, temp folder, child environment, deadline."""

    def __init__(self, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> None:
        self.args, self.tmp, self.env = args, tmp, env
        self.t_start = time.perf_counter()
        self.budgets = dict(SMOKE_BUDGETS if args.smoke else BUDGETS)
        self.budgets.update(args.budget)
        self.fail = set(args.fail)
        self.main_wall_s: float | None = None

    def remaining(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    # -- main job -----------------------------------------------------------
    def data_root(self) -> Path:
        if self.args.data_root:
            root = Path(self.args.data_root)
        elif self.args.smoke:
            root = self.tmp / "fashion-mnist"
            if not root.exists():
                from cld_lightning.data import synthetic

                synthetic.write_fake_fashion_mnist(
                    root, n_train=256, n_test=128, gz=True, flat=True
                )
        else:
            root = DATA_ROOT
        root = root.resolve()
        missing = [
            f for f in FMNIST_FILES if not (root / f).exists() and not (root / f"{f}.gz").exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST files {missing} not in {root}: run `make gpu-data` on the "
                "development machine and name .gpu_carry in the device call's carry"
            )
        return root

    def main_job(self, timeout: float, factor: int = 1, name: str = "main_job") -> dict[str, Any]:
        smoke = self.args.smoke
        epochs = (SMOKE_EPOCHS if smoke else experiment_epochs()) * factor
        reserve = SMOKE_EVAL_RESERVE_S if smoke else EVAL_RESERVE_S
        run_dir = self.tmp / name
        trainer = "cpu" if smoke else "gpu"
        if name in self.fail:
            trainer = FORCED  # no such trainer config: Hydra stops at once, as a broken run would
        overrides = [
            f"experiment={EXPERIMENT}",
            f"trainer={trainer}",
            f"data.root={self.data_root()}",
            "data.download=false",
            f"trainer.max_epochs={epochs}",
            f"trainer.max_time={_fmt_max_time(max(10.0, timeout - reserve))}",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ]
        if smoke:
            overrides += [o for o in SMOKE_MAIN_OVERRIDES if not o.startswith("trainer=")]
        cmd = [sys.executable, "-m", MODULE, *overrides]
        child = run_child(name, cmd, timeout, self.env)
        res: dict[str, Any] = {
            "command": "python -m cld_lightning.app.train " + " ".join(overrides),
            "wall_s": child["wall_s"],
            "epochs_requested": epochs,
            "lightning_lines": child["marked"],
        }
        metrics_path = run_dir / "metrics.json"
        if child["timed_out"] or child["rc"] != 0 or not metrics_path.exists():
            res["status"] = "timeout" if child["timed_out"] else "failed"
            res["error"] = (
                f"timed out after {timeout:.0f} s"
                if child["timed_out"]
                else f"exit status {child['rc']}"
                + ("" if metrics_path.exists() else "; no metrics.json")
            )
            res["output_tail"] = child["tail"]
            return res
        m = json.loads(metrics_path.read_text())
        keys = (
            "knn/top1",
            "knn/backbone_top1",
            "knn/pixel_top1",
            "knn/random_init_top1",
            "knn/random_init_backbone_top1",
            "selection/label_free_score",
        )
        res["metrics"] = {k: m.get(k) for k in keys}
        res["metrics_all"] = m  # everything the run's metrics.json holds
        if all(m.get(k) is not None for k in keys[:5]):
            best_untrained = max(m["knn/random_init_top1"], m["knn/random_init_backbone_top1"])
            res["learned_minus_pixels"] = round(m["knn/top1"] - m["knn/pixel_top1"], 2)
            res["learned_minus_best_untrained"] = round(m["knn/top1"] - best_untrained, 2)
        res.update(_epochs_done(run_dir / "csv" / "version_0" / "metrics.csv"))
        res["device_choice"] = _device_choice(run_dir)  # precision and layout auto chose
        time_limited = any("Time limit reached" in line for line in child["tail"] + child["marked"])
        res["stopped_by_max_time"] = time_limited or res.get("epochs_logged", 0) < epochs
        res["status"] = "ok"
        if name == "main_job":
            self.main_wall_s = child["wall_s"]
        return res

    # -- precision auto vs bf16-mixed ---------------------------------------
    def precision_auto(self, timeout: float, name: str = "precision_auto") -> dict[str, Any]:
        """The main job for a few steps with ``trainer.precision=auto``, then with an explicit
        ``bf16-mixed``: what ``auto`` chose (precision, layout, reasons: ``.hydra/device.yaml``)
        and each run's mean training-step time (SimpleProfiler's ``run_training_batch``)."""
        smoke, t0 = self.args.smoke, time.perf_counter()
        steps = SMOKE_PRECISION_STEPS if smoke else PRECISION_STEPS
        res: dict[str, Any] = {"steps": steps, "runs": {}}
        for label, precision in (("auto", "auto"), ("bf16_mixed", "bf16-mixed")):
            run_dir = self.tmp / f"{name}_{label}"
            trainer = FORCED if name in self.fail else ("cpu" if smoke else "gpu")
            profiler = "{_target_:pytorch_lightning.profilers.SimpleProfiler,"
            profiler += f"dirpath:{run_dir},filename:profile}}"
            overrides = [
                f"experiment={EXPERIMENT}",
                f"trainer={trainer}",
                f"data.root={self.data_root()}",
                "data.download=false",
                f"trainer.precision={precision}",
                f"trainer.max_steps={steps}",
                "trainer.max_epochs=-1",
                f"trainer.profiler={profiler}",
                "trainer.enable_progress_bar=false",
                "final_knn=false",
                "baselines=false",
                "selection.enabled=false",
                "plots.enabled=false",
                f"hydra.run.dir={run_dir}",
            ]
            if smoke:
                overrides += [o for o in SMOKE_MAIN_OVERRIDES if not o.startswith("trainer=")]
            left = timeout - (time.perf_counter() - t0)
            child = run_child(
                f"{name}:{label}", [sys.executable, "-m", MODULE, *overrides], left, self.env
            )
            run: dict[str, Any] = {
                "command": "python -m cld_lightning.app.train " + " ".join(overrides),
                "wall_s": child["wall_s"],
                "device_choice": _device_choice(run_dir),
                "step_s": mean_step_s(run_dir),
            }
            if child["timed_out"] or child["rc"] != 0 or run["step_s"] is None:
                res["status"] = "timeout" if child["timed_out"] else "failed"
                res["error"] = f"{label}: " + (
                    f"timed out after {left:.0f} s"
                    if child["timed_out"]
                    else f"exit status {child['rc']}; step time found: {run['step_s']}"
                )
                res["output_tail"] = child["tail"]
                res["runs"][label] = run
                res["wall_s"] = round(time.perf_counter() - t0, 1)
                return res
            res["runs"][label] = run
        auto, bf16 = res["runs"]["auto"], res["runs"]["bf16_mixed"]
        res["auto_choice"] = auto["device_choice"]
        res["auto_over_bf16_step"] = round(auto["step_s"] / bf16["step_s"], 3)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        res["status"] = "ok"
        return res

    # -- throughput ---------------------------------------------------------
    def throughput(self, name: str, timeout: float, argv: list[str]) -> dict[str, Any]:
        margin = SMOKE_THROUGHPUT_MARGIN_S if self.args.smoke else THROUGHPUT_MARGIN_S
        out = self.tmp / f"{name}.json"
        argv = list(argv)
        if name in self.fail:  # an unknown precision: every run fails inside Lightning
            i = argv.index("--precisions")
            argv[i + 1] = FORCED
        cmd = [sys.executable, str(ROOT / "scripts" / "gpu_throughput.py"), *argv]
        cmd += ["--budget-s", f"{max(0.0, timeout - margin):.0f}", "--out", str(out)]
        cmd += ["--profile-below", str(self.args.profile_below)]
        if self.args.smoke:
            cmd.append("--smoke")
        child = run_child(name, cmd, timeout, self.env)
        res: dict[str, Any] = {"command": " ".join(cmd[1:]), "wall_s": child["wall_s"]}
        if out.exists():
            data = json.loads(out.read_text())
            res["runs"] = data["runs"]
            res["table"] = [_row(r) for r in data["runs"]]
            for k in ("device", "workers", "warmup_steps", "measured_steps", "channels_last"):
                res[k] = data.get(k)
            res["data_write_s"] = {k: v for k, v in data.items() if k.endswith("_data_write_s")}
        errors = [f"{r['mode']}: {r['error']}" for r in res.get("runs", []) if "error" in r]
        if child["timed_out"]:
            res["status"], res["error"] = "timeout", f"timed out after {timeout:.0f} s"
        elif child["rc"] != 0 or errors or not out.exists():
            res["status"] = "failed"
            res["error"] = "; ".join(errors)[:2000] or f"exit status {child['rc']}"
        else:
            res["status"] = "ok"
        if res["status"] != "ok":
            res["output_tail"] = child["tail"]
        return res


def _row(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("workload", "method", "mode", "decoder", "precision", "images_per_s")
    row = {k: r.get(k) for k in keys}
    row.update(
        vs_model_only=r.get("vs_model_only"),
        peak_mem_gib=r.get("peak_mem_gib"),
        profiled="profile" in r,
    )
    for k in ("skipped", "error"):
        if k in r:
            row[k] = r[k]
    return row


def _device_choice(run_dir: Path) -> dict[str, Any] | None:
    """What cld-train's ``auto`` chose (``.hydra/device.yaml``: precision and layout with their
    reasons), or None when the run did not get that far."""
    path = run_dir / ".hydra" / "device.yaml"
    if not path.exists():
        return None
    import yaml

    return yaml.safe_load(path.read_text())


def mean_step_s(run_dir: Path) -> float | None:
    """Mean ``run_training_batch`` seconds from the SimpleProfiler report in ``run_dir``."""
    for report in sorted(run_dir.glob("*profile*.txt")):
        for line in report.read_text().splitlines():
            cells = [c.strip() for c in line.split("|") if c.strip()]
            if len(cells) >= 2 and cells[0] == "run_training_batch":
                return float(cells[1])
    return None


def _epochs_done(path: Path) -> dict[str, Any]:
    """Epochs that logged their training loss, and the last global step, from the CSV log."""
    if not path.exists():
        return {}
    epochs, step = 0, 0
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("train/loss_epoch"):
                epochs += 1
            if row.get("step"):
                step = max(step, int(float(row["step"])))
    return {"epochs_logged": epochs, "global_steps": step}


# ------------------------------------------------------------------ main
def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU dry run (tests)")
    p.add_argument("--out", default=None, help="JSON path (default $OUT/gpu_check.json)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    p.add_argument("--budget-s", type=float, default=None, help="total seconds (470; smoke 300)")
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="PART=SECONDS",
        help="one part's time budget (repeatable)",
    )
    p.add_argument("--data-root", default=None, help=f"Fashion-MNIST files (default {DATA_ROOT})")
    p.add_argument("--profile-below", type=float, default=None, help="0.9 (smoke: always)")
    p.add_argument("--fail", default="", help="comma list of parts to sabotage (tests)")
    p.add_argument("--carry-size", action="store_true", help="print what a device call carries")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    args.fail = [
        x for x in (args.fail + "," + os.environ.get("GPU_CHECK_FAIL", "")).split(",") if x
    ]
    budgets = {}
    for item in args.budget:
        part, _, sec = item.partition("=")
        budgets[part] = float(sec)
    args.budget = budgets
    bad = sorted({*args.parts, *args.fail, *budgets} - set(PARTS))
    if bad:
        p.error(f"unknown part(s) {bad}; parts are {list(PARTS)}")
    if args.budget_s is None:
        args.budget_s = SMOKE_TOTAL_BUDGET if args.smoke else TOTAL_BUDGET
    if args.profile_below is None:
        # smoke: profile every loop mode, so that the profiler path is exercised on the CPU
        args.profile_below = 1e9 if args.smoke else 0.9
    return args


def _child_env(args: argparse.Namespace, tmp: Path, site_used: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(SRC)] + ([str(SITE)] if site_used else [])
    if args.smoke:
        # imitate the device machine: no wandb there (cld-train with logger=csv never imports it)
        shim = tmp / "device_shim"
        (shim / "wandb").mkdir(parents=True, exist_ok=True)
        (shim / "wandb" / "__init__.py").write_text(
            'raise ImportError("wandb is hidden by gpu_check --smoke (not on the device)")\n'
        )
        paths.insert(0, str(shim))
        env.setdefault("OMP_NUM_THREADS", "1")
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HYDRA_FULL_ERROR", "0")
    return env


def _write(out: Path, summary: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out)


def _print_summary(summary: dict[str, Any]) -> None:
    print("\n" + "=" * 72)
    print(f"gpu_check on {summary['device']} ({summary['total_s']} s)")
    for name, part in summary["parts"].items():
        line = f"  {name:<17} {part['status']:<8}"
        if part["status"] == "skipped":
            line += f" {part.get('reason', '')}"
        elif part["status"] != "ok":
            line += f" {str(part.get('error', ''))[:200]}"
        elif name.startswith("main_job"):
            m = part.get("metrics", {})
            line += (
                f" {part['wall_s']} s; kNN {m.get('knn/top1')} vs pixels {m.get('knn/pixel_top1')}"
                f", untrained {m.get('knn/random_init_top1')} / "
                f"{m.get('knn/random_init_backbone_top1')}; epochs {part.get('epochs_logged')}/"
                f"{part['epochs_requested']}"
            )
        elif name == "precision_auto":
            runs, choice = part["runs"], part["auto_choice"] or {}
            prec, layout = choice.get("precision", {}), choice.get("channels_last", {})
            line += (
                f" auto: {prec.get('value')} ({prec.get('reason')}), channels_last "
                f"{layout.get('value')} ({layout.get('reason')}); step "
                f"{runs['auto']['step_s'] * 1e3:.1f} ms vs bf16-mixed "
                f"{runs['bf16_mixed']['step_s'] * 1e3:.1f} ms ({part['auto_over_bf16_step']}x)"
            )
        else:
            line += f" {part['wall_s']} s"
        print(line)
        for row in part.get("table", []):
            if "images_per_s" in row and row["images_per_s"] is not None:
                print(
                    f"      {row['workload']}/{row['method']}/{row['mode']:<11} "
                    f"{row['images_per_s']:>9} img/s  {row['vs_model_only']}x  "
                    f"peak {row['peak_mem_gib']} GiB{'  profiled' if row['profiled'] else ''}"
                )
    print(f"  dali: {summary['dali']}")
    print("=" * 72, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.carry_size:
        sizes = carry_sizes()
        print(json.dumps(sizes, indent=2))
        mib = sizes["total_bytes"] / 2**20
        print(
            f"total {mib:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB: {'fits' if sizes['fits'] else 'TOO LARGE'}"
        )
        return 0 if sizes["fits"] else 1

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "gpu_check: no accelerator: torch.cuda.is_available() is False on this machine, so "
            "nothing was measured and no JSON was written. Run it on the device machine "
            "(docs/GPU_CHECK.md); the CPU dry run is `python scripts/gpu_check.py --smoke`.",
            file=sys.stderr,
            flush=True,
        )
        return 2
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    out = _out_path(args.out)
    cuda = torch.cuda.is_available() and not args.smoke
    summary: dict[str, Any] = {
        "check": "gpu_check (issue 20)",
        "argv": sys.argv[1:] if argv is None else argv,
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.machine()})",
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "budget_s": args.budget_s,
        "dali": DALI_NOTE,
        "parts": {},
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        site_used = False
        try:
            summary["setup"] = ensure_hydra()
            site_used = "site" in summary["setup"]
        except Exception as e:  # noqa: BLE001 - the parts that need hydra will say so too
            summary["setup"] = {"error": f"{type(e).__name__}: {e}"}
        summary["setup"]["s"] = round(time.perf_counter() - t0, 1)
        summary["versions"] = _versions()
        check = Check(args, tmp, _child_env(args, tmp, site_used))
        summary["part_budgets_s"] = check.budgets
        for name in PARTS:
            part: dict[str, Any]
            left = check.remaining()
            if name not in args.parts:
                part = {"status": "skipped", "reason": "not selected (--parts)"}
            elif left < MIN_PART_S:
                part = {"status": "skipped", "reason": f"time budget: {max(0, left):.0f} s left"}
            elif name in OPTIONAL and "main_job" in args.parts:
                go, why = plan_optional(left, check.main_wall_s)
                part = {"status": "skipped", "reason": why} if not go else {}
            else:
                part = {}
            if not part:
                timeout = min(check.budgets.get(name, left), left)  # optional: the rest
                print(f"gpu_check: {name} (budget {timeout:.0f} s)", flush=True)
                try:
                    if name == "main_job":
                        part = check.main_job(timeout)
                    elif name == "precision_auto":
                        part = check.precision_auto(timeout)
                    elif name == "main_job_3x":
                        part = check.main_job(timeout, factor=3, name=name)
                    elif name == "throughput_cifar":
                        argv_t = ["--only", "cifar", "--methods", "npid,moco"]
                        argv_t += ["--modes", "model_only,gpu,loader", "--precisions", "bf16-mixed"]
                        part = check.throughput(name, timeout, argv_t)
                    else:
                        argv_t = ["--only", "jpeg", "--methods", "npid"]
                        argv_t += ["--modes", "model_only,torchvision,gpu,loader"]
                        argv_t += ["--precisions", "bf16-mixed"]
                        part = check.throughput(name, timeout, argv_t)
                except Exception as e:  # noqa: BLE001 - record and go on
                    part = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                part["budget_s"] = round(timeout)
            failed |= part["status"] in ("failed", "timeout")
            summary["parts"][name] = part
            summary["total_s"] = round(time.perf_counter() - check.t_start, 1)
            summary["ok"] = not failed
            _write(out, summary)
    _print_summary(summary)
    print(f"wrote {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
