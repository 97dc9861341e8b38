"""Per-step time and peak memory of every base method with and without CLD.

One training step = ``compute_loss`` (forward) + backward + SGD step + ``update_state`` (memory
bank / queue / EMA), i.e. exactly what ``SSLMethod.training_step`` and ``on_train_batch_end`` do
inside a Trainer, without the Trainer's logging overhead. Timing: the configurations of one method
run in one subprocess, round-robin step by step (so that background load on a shared machine hits
base and +CLD alike), median per configuration over the timed steps after warm-up. Memory: each
configuration alone in a fresh subprocess (warm-up + 1 step), so that its peak is its own: on CPU the child's peak RSS
(``resource.getrusage(...).ru_maxrss``, which includes the ~0.4 GB of imported libraries; the
``step_peak_rss_mb`` column subtracts the RSS measured right before the first step), on CUDA
``torch.cuda.max_memory_allocated``.

Ratios (``*_ratio`` keys) compare ``method+CLD`` with ``method`` at equal views/crops; the goal for
``npid_cld_over_npid_2view_ratio`` is <= 1.05. ``moco_cld_2crop_over_moco_2crop_ratio`` is *not*
at equal compute: with 2 crops CLD needs crop 2 through the query encoder (an extra forward and
backward, see ``methods/moco.py``); the 3-crop rows are the equal-crops comparison.

    python benchmarks/step_time.py                    # everything, CPU (several minutes)
    python benchmarks/step_time.py --quick            # width 16, batch 64, 2 timed steps
    python benchmarks/step_time.py --only npid,moco --widths 16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "step_time.json"

# name -> (method, views/crops fed, extra constructor kwargs, cld on)
CONFIGS: dict[str, tuple[str, int, dict[str, Any], bool]] = {
    "npid_1view": ("npid", 1, {"num_views": 1}, False),
    "npid_2view": ("npid", 2, {"num_views": 2}, False),
    "npid_cld": ("npid", 2, {"num_views": 2}, True),
    "moco_2crop": ("moco", 2, {"num_crops": 2}, False),
    "moco_cld_2crop": ("moco", 2, {"num_crops": 2}, True),
    "moco_3crop": ("moco", 3, {"num_crops": 3}, False),
    "moco_cld_3crop": ("moco", 3, {"num_crops": 3}, True),
    "byol": ("byol", 2, {}, False),
    "byol_cld": ("byol", 2, {}, True),
    "infomin_2crop": ("infomin", 2, {"num_crops": 2}, False),
    "infomin_cld_2crop": ("infomin", 2, {"num_crops": 2}, True),
    "infomin_3crop": ("infomin", 3, {"num_crops": 3}, False),
    "infomin_cld_3crop": ("infomin", 3, {"num_crops": 3}, True),
}
RATIOS = {
    "npid_cld_over_npid_2view_ratio": ("npid_cld", "npid_2view"),
    "npid_cld_over_npid_1view_ratio": ("npid_cld", "npid_1view"),
    "moco_cld_2crop_over_moco_2crop_ratio": ("moco_cld_2crop", "moco_2crop"),
    "moco_cld_3crop_over_moco_3crop_ratio": ("moco_cld_3crop", "moco_3crop"),
    "moco_cld_3crop_over_moco_2crop_ratio": ("moco_cld_3crop", "moco_2crop"),
    "byol_cld_over_byol_ratio": ("byol_cld", "byol"),
    "infomin_cld_2crop_over_infomin_2crop_ratio": ("infomin_cld_2crop", "infomin_2crop"),
    "infomin_cld_3crop_over_infomin_3crop_ratio": ("infomin_cld_3crop", "infomin_3crop"),
}


def build(
    method: str,
    kwargs: dict[str, Any],
    cld: bool,
    width: int,
    num_clusters: int,
    bank_size: int,
    queue_size: int,
) -> Any:
    from cld_lightning.methods import BYOL, NPID, InfoMin, MoCo
    from cld_lightning.models import build_backbone

    backbone = build_backbone("cifar_resnet18", width=width, in_channels=3)
    cld_cfg = {"enabled": cld, "num_clusters": num_clusters, "temperature": 0.2, "num_iters": 5}
    common = {"warmup_epochs": 0, "lr": 0.03}
    if method == "npid":
        return NPID(backbone, bank_size, cld_cfg, **kwargs, **common)
    if method == "byol":
        return BYOL(backbone, cld_cfg, **kwargs, **common)
    cls = MoCo if method == "moco" else InfoMin
    return cls(
        backbone,
        cld_cfg,
        queue_size=queue_size,
        instance_head="normlinear",
        **kwargs,
        **common,
    )


def rss_mb() -> float:
    """Current RSS (Linux /proc), MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def make_run(name: str, args: argparse.Namespace, device: Any) -> tuple[Any, Any, Any]:
    """(model, optimiser, batch) of one configuration, seeded."""
    import torch

    method, views, kwargs, cld = CONFIGS[name]
    torch.manual_seed(0)
    model = (
        build(method, kwargs, cld, args.width, args.num_clusters, args.bank_size, args.queue_size)
        .to(device)
        .train()
    )
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9, weight_decay=5e-4
    )
    g = torch.Generator().manual_seed(0)
    b = args.batch_size
    batch = (
        [torch.randn(b, 3, 32, 32, generator=g).to(device) for _ in range(views)],
        torch.zeros(b, dtype=torch.long, device=device),
        torch.randperm(args.bank_size, generator=g)[:b].to(device),
    )
    return model, opt, batch


def train_step(model: Any, opt: Any, batch: Any, step: int, device: Any) -> tuple[float, float]:
    """One full step (forward, backward, SGD, state update); returns (seconds, loss)."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    losses, pending = model.compute_loss(batch, step)
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    model.update_state(pending)
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, float(losses["loss"])


def run_memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory of one configuration alone in this fresh process (warm-up + 1 step)."""
    import torch

    device = torch.device(args.device)
    model, opt, batch = make_run(args.child, args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_mb()
    for step in range(args.warmup + 1):
        train_step(model, opt, batch, step, device)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB -> MB on Linux
    out = {"peak_rss_mb": peak_rss, "step_peak_rss_mb": peak_rss - rss_before}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run_time_child(args: argparse.Namespace) -> dict[str, Any]:
    """Time a group of configurations in one process, round-robin step by step, so that
    background load hits all of them alike; per-configuration median over the timed steps."""
    import torch

    device = torch.device(args.device)
    names = args.child.split(",")
    runs = {n: make_run(n, args, device) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, float] = {}
    for step in range(args.warmup + args.steps):
        for n in names:
            dt, losses[n] = train_step(*runs[n], step, device)
            if step >= args.warmup:
                times[n].append(dt)
    return {
        n: {"step_times_s": times[n], "step_time_s": statistics.median(times[n]), "loss": losses[n]}
        for n in names
    }


def machine_info(device: str) -> dict[str, Any]:
    import torch

    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def markdown(rows: list[dict[str, Any]], ratios: dict[str, float]) -> str:
    mem_key = "cuda_max_allocated_mb" if any("cuda_max_allocated_mb" in r for r in rows) else None
    head = (
        "| width | config | views | CLD | step time (s) | img/s | peak RSS (MB) | step RSS (MB) |"
    )
    if mem_key:
        head += " CUDA max alloc (MB) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (
            f"| {r['width']} | {r['config']} | {r['views']} | {'yes' if r['cld'] else 'no'} | "
            f"{r['step_time_s']:.3f} | {r['img_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['step_peak_rss_mb']:.0f} |"
        )
        if mem_key:
            line += f" {r.get(mem_key, float('nan')):.0f} |"
        lines.append(line)
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in ratios.items()]
    return "\n".join(lines)


def child(
    args: argparse.Namespace, mode: str, names: str, width: int, steps: int
) -> dict[str, Any] | None:
    """Run one measurement in a fresh subprocess; its last stdout line is JSON."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        names,
        "--mode",
        mode,
        "--width",
        str(width),
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--num-clusters",
        str(args.num_clusters),
        "--bank-size",
        str(args.bank_size),
        "--queue-size",
        str(args.queue_size),
        "--steps",
        str(steps),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"[{mode} {names} w{width}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save(
    args: argparse.Namespace,
    info: dict[str, Any],
    rows: list[dict[str, Any]],
    ratios: dict[str, float],
) -> None:
    info["load_average_at_end"] = list(os.getloadavg())
    settings = {k: v for k, v in vars(args).items() if k not in ("child", "width", "mode")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": info, "settings": settings, "results": rows, "ratios": ratios}
    out.write_text(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--widths", default="16,64", help="comma-separated backbone widths")
    ap.add_argument("--only", default="", help="comma-separated substrings of config names")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-clusters", type=int, default=128)
    ap.add_argument("--bank-size", type=int, default=50000, help="NPID memory bank rows (CIFAR)")
    ap.add_argument("--queue-size", type=int, default=12288, help="MoCo/InfoMin queue (CIFAR)")
    ap.add_argument("--steps-w64", type=int, default=3, help="timed steps at width >= 64")
    ap.add_argument("--steps", type=int, default=10, help="timed steps at smaller widths")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="width 16, batch 64, 2 timed steps")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = run_time_child if args.mode == "time" else run_memory_child
        print(json.dumps(fn(args)))
        return
    if args.quick:
        args.widths, args.batch_size, args.steps, args.steps_w64 = "16", 64, 2, 2
    names = [n for n in CONFIGS if not args.only or any(s and s in n for s in args.only.split(","))]
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    info = machine_info(args.device)
    groups = [[n for n in names if CONFIGS[n][0] == m] for m in ("npid", "moco", "byol", "infomin")]
    for width in (int(w) for w in args.widths.split(",")):
        steps = args.steps_w64 if width >= 64 else args.steps
        for group in (g for g in groups if g):
            timed = child(args, "time", ",".join(group), width, steps)
            for name in group:
                if timed is None:
                    continue
                method, views, _, cld = CONFIGS[name]
                mem = child(args, "memory", name, width, 1) or {}
                row = {
                    "config": name,
                    "method": method,
                    "views": views,
                    "cld": cld,
                    "width": width,
                    "batch_size": args.batch_size,
                    "steps": steps,
                    "warmup": args.warmup,
                    **timed[name],
                    "img_per_s": args.batch_size / timed[name]["step_time_s"],
                    **mem,
                }
                rows.append(row)
                print(
                    f"w{width:<3} {name:<18} {row['step_time_s']:.3f} s/step "
                    f"{row['img_per_s']:.0f} img/s  peak RSS {row.get('peak_rss_mb', 0):.0f} MB",
                    flush=True,
                )
            by_name = {r["config"]: r for r in rows if r["width"] == width}
            for key, (num, den) in RATIOS.items():
                if num in by_name and den in by_name:
                    ratios[f"w{width}_{key}"] = (
                        by_name[num]["step_time_s"] / by_name[den]["step_time_s"]
                    )
            save(args, info, rows, ratios)  # partial results survive an interrupted run
    print()
    print(markdown(rows, ratios))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
