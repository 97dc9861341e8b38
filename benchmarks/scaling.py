"""Scaling benchmark: NPID+CLD throughput, 1 vs 2 DDP processes, and the memory-bank footprint.

    python benchmarks/scaling.py                      # CPU: gloo, 1 thread per process
    python benchmarks/scaling.py --device cuda        # + GPU step time fp32 vs bf16 (1 process)

Writes ``benchmarks/results/scaling.json`` and prints a markdown table. Throughput counts images
(per process batch x processes) per second of optimiser steps after warm-up, with a plain training
loop (forward, loss, backward, gloo gradient all-reduce as DDP does it, SGD, bank update).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cld_lightning.methods import NPID
from cld_lightning.models import build_backbone

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"


def _model(width: int, n: int, device: str) -> NPID:
    torch.manual_seed(0)
    return NPID(
        build_backbone("cifar_resnet18", width=width, in_channels=3),
        n,
        {"num_clusters": 64},
        warmup_epochs=0,
    ).to(device)


def _steps(
    model: Any, batch: int, size: int, steps: int, warmup: int, device: str, precision: str = "32"
) -> float:
    """Seconds per step (mean after warm-up)."""
    inner = model.module if hasattr(model, "module") else model
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    n = inner.memory.num_samples
    views = [torch.randn(batch, 3, size, size, device=device) for _ in range(2)]
    rank = dist.get_rank() if dist.is_initialized() else 0
    index = (torch.arange(batch, device=device) + rank * batch) % n
    dtype = torch.bfloat16 if precision == "bf16" else None
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            losses, pending = inner.compute_loss((views, index, index), i)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if dist.is_initialized():
            for p in model.parameters():
                if p.grad is not None:  # what DDP does (sum, then / world)
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        opt.step()
        inner.update_state(pending)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def _ddp_worker(rank: int, world: int, port: int, cfg: dict[str, Any], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(cfg["threads"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = _model(cfg["width"], cfg["bank_rows"], "cpu")
    step = _steps(model, cfg["batch"], cfg["size"], cfg["steps"], cfg["warmup"], "cpu")
    t = torch.tensor([step])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": float(t)}))
    dist.destroy_process_group()


def cpu_throughput(cfg: dict[str, Any], processes: int, threads: int) -> dict[str, Any]:
    if processes == 1:
        torch.set_num_threads(threads)
        step = _steps(
            _model(cfg["width"], cfg["bank_rows"], "cpu"),
            cfg["batch"],
            cfg["size"],
            cfg["steps"],
            cfg["warmup"],
            "cpu",
        )
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = Path(f"/tmp/scaling_{os.getpid()}.json")
        mp.spawn(
            _ddp_worker,
            args=(processes, port, {**cfg, "threads": threads}, str(out)),
            nprocs=processes,
            join=True,
        )
        step = json.loads(out.read_text())["step_s"]
        out.unlink()
    return {
        "device": "cpu",
        "processes": processes,
        "threads_per_process": threads,
        "batch_per_process": cfg["batch"],
        "step_s": round(step, 4),
        "images_per_s": round(processes * cfg["batch"] / step, 1),
    }


def bank_memory(rows: int = 1_281_167, dim: int = 128) -> list[dict[str, Any]]:
    out = []
    for dtype in (torch.float32, torch.float16):
        computed = rows * dim * torch.finfo(dtype).bits // 8
        t = torch.empty(rows, dim, dtype=dtype)
        measured = t.untyped_storage().nbytes()
        del t
        out.append(
            {
                "rows": rows,
                "dim": dim,
                "dtype": str(dtype).replace("torch.", ""),
                "computed_mib": round(computed / 2**20, 1),
                "measured_mib": round(measured / 2**20, 1),
            }
        )
    return out


def gpu_step_times(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    res = []
    for precision in ("32", "bf16"):
        model = _model(cfg["gpu_width"], cfg["bank_rows"], "cuda")
        torch.cuda.reset_peak_memory_stats()
        step = _steps(
            model, cfg["gpu_batch"], cfg["size"], cfg["steps"], cfg["warmup"], "cuda", precision
        )
        res.append(
            {
                "device": torch.cuda.get_device_name(0),
                "processes": 1,
                "precision": precision,
                "batch": cfg["gpu_batch"],
                "width": cfg["gpu_width"],
                "step_s": round(step, 4),
                "images_per_s": round(cfg["gpu_batch"] / step, 1),
                "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            }
        )
    return res


def markdown(result: dict[str, Any]) -> str:
    lines = ["| setting | step (s) | images/s |", "|---|---|---|"]
    for r in result["cpu"]:
        lines.append(
            f"| CPU, {r['processes']} proc x {r['threads_per_process']} thread(s), "
            f"batch {r['batch_per_process']}/proc | {r['step_s']} | {r['images_per_s']} |"
        )
    for r in result.get("gpu", []):
        lines.append(
            f"| {r['device']}, {r['precision']}, batch {r['batch']} | {r['step_s']} | "
            f"{r['images_per_s']} |"
        )
    lines += ["", "| NPID bank | computed MiB | measured MiB |", "|---|---|---|"]
    for b in result["bank_memory"]:
        lines.append(
            f"| {b['rows']} x {b['dim']} {b['dtype']} | {b['computed_mib']} | {b['measured_mib']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--output", default=str(RESULTS))
    a = p.parse_args()
    cfg = {
        "width": a.width,
        "batch": a.batch,
        "size": 32,
        "steps": a.steps,
        "warmup": a.warmup,
        "bank_rows": 4096,
        "gpu_width": 64,
        "gpu_batch": 256,
    }
    result: dict[str, Any] = {
        "config": cfg,
        "torch": torch.__version__,
        "cpu": [cpu_throughput(cfg, 1, 1), cpu_throughput(cfg, 1, 2), cpu_throughput(cfg, 2, 1)],
    }
    result["bank_memory"] = bank_memory()
    if a.device == "cuda" and torch.cuda.is_available():
        result["gpu"] = gpu_step_times(cfg)
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
