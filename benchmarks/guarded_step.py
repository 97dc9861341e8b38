"""Cost of the guarded step: the copy of the forward-pass buffers (BatchNorm running statistics
and the like, :meth:`SSLMethod.forward_buffers`) taken before every training step so that a
skipped non-finite step can restore them.

Two figures, interleaved A/B repeats on whatever device is given:
- the snapshot alone (one ``torch._foreach_copy_`` into the previous step's tensors) for the CIFAR
  ResNet-18 and the ImageNet ResNet-50 (MoCo: online + EMA copy);
- one whole NPID+CLD ``training_step`` + backward + SGD step of the CIFAR ResNet-18, with the
  snapshot vs with it replaced by a no-op.

Writes benchmarks/results/guarded_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cld_lightning.methods import NPID, MoCo
from cld_lightning.models import build_backbone

OUT = Path(__file__).resolve().parent / "results" / "guarded_step.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def snapshot_cost(model: Any, device: torch.device, repeats: int) -> dict[str, float]:
    model._snapshot_forward_buffers()  # allocate once
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model._snapshot_forward_buffers()
        _sync(device)
        times.append(time.perf_counter() - t)
    n = len(model.forward_buffers())
    return {"buffers": n, "median_us": 1e6 * statistics.median(times)}


def step_ab(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = NPID(
        build_backbone("cifar_resnet18", width=args.width, in_channels=3),
        4 * args.batch_size,
        {"num_clusters": 32},
        warmup_epochs=0,
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(args.batch_size, 3, 32, 32, generator=g).to(device) for _ in range(2)]
    idx = torch.arange(args.batch_size, device=device)
    batch = (views, torch.zeros(args.batch_size, dtype=torch.long, device=device), idx)
    real = model._snapshot_forward_buffers

    def step(guard: bool) -> float:
        model._snapshot_forward_buffers = real if guard else (lambda: [])  # type: ignore[method-assign]
        _sync(device)
        t = time.perf_counter()
        loss = model.training_step(batch, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t

    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.warmup + args.repeats):
        for guard in (False, True) if i % 2 == 0 else (True, False):
            dt = step(guard)
            if i >= args.warmup:
                times[guard].append(dt)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {
        "width": args.width,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "median_step_ms_without_snapshot": 1e3 * off,
        "median_step_ms_with_snapshot": 1e3 * on,
        "overhead_pct": 100 * (on - off) / off,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    r18 = NPID(build_backbone("cifar_resnet18", width=64, in_channels=3), 256, {}).to(device)
    r50 = MoCo(build_backbone("resnet50", in_channels=3), {}, queue_size=256).to(device)
    result = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "snapshot_only": {
            "cifar_resnet18_npid_cld": snapshot_cost(r18, device, 200),
            "resnet50_moco_cld_with_ema_copy": snapshot_cost(r50, device, 200),
        },
        "npid_cld_step": step_ab(args, device),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
