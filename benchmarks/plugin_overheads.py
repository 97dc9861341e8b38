"""Two per-step costs behind defaults, measured on the CPU with interleaved A/B repeats:

- ``channels_last``: one NPID+CLD training step (2 views, forward + backward + SGD) of the CIFAR
  ResNet-18 at 32 px, NCHW vs channels-last memory format (the CIFAR recipes turn it on);
- the non-finite-loss guard (``SSLMethod._all_finite``): per-call cost on one process and on two
  gloo processes (its all-reduce), next to the step time above.

Writes benchmarks/results/plugin_overheads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cld_lightning.methods import NPID
from cld_lightning.models import build_backbone

OUT = Path(__file__).resolve().parent / "results" / "plugin_overheads.json"


def _npid(channels_last: bool, width: int, num_samples: int) -> NPID:
    torch.manual_seed(0)
    backbone = build_backbone("cifar_resnet18", width=width, in_channels=3)
    return NPID(
        backbone,
        num_samples,
        {"num_clusters": 64},
        num_views=2,
        channels_last=channels_last,
        warmup_epochs=0,
    )


def step_times(args: argparse.Namespace) -> dict[str, Any]:
    models = {cl: _npid(cl, args.width, 4 * args.batch_size) for cl in (False, True)}
    opts = {cl: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for cl, m in models.items()}
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(args.batch_size, 3, 32, 32, generator=g) for _ in range(2)]
    batch = (views, torch.zeros(args.batch_size, dtype=torch.long), torch.arange(args.batch_size))

    def step(cl: bool) -> float:
        model, opt = models[cl], opts[cl]
        t = time.perf_counter()
        losses, _ = model.compute_loss(batch, 0)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        return time.perf_counter() - t

    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.warmup + args.repeats):
        for cl in (False, True) if i % 2 == 0 else (True, False):  # interleaved, alternating
            dt = step(cl)
            if i >= args.warmup:
                times[cl].append(dt)
    nchw, cl = statistics.median(times[False]), statistics.median(times[True])
    return {
        "nchw_step_ms": round(1000 * nchw, 1),
        "channels_last_step_ms": round(1000 * cl, 1),
        "speedup": round(nchw / cl, 3),
        "nchw_all_ms": [round(1000 * t, 1) for t in times[False]],
        "channels_last_all_ms": [round(1000 * t, 1) for t in times[True]],
    }


def _guard_cost(repeats: int) -> float:
    model = _npid(False, 4, 8)
    loss = torch.tensor(1.0)
    for _ in range(10):
        model._all_finite(loss)
    t = time.perf_counter()
    for _ in range(repeats):
        model._all_finite(loss)
    return (time.perf_counter() - t) / repeats


def _guard_worker(rank: int, world: int, port: int, repeats: int, out: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cost = _guard_cost(repeats)
        if rank == 0:
            Path(out).write_text(json.dumps(cost))
    finally:
        dist.destroy_process_group()


def guard_costs(repeats: int) -> dict[str, float]:
    import socket
    import tempfile

    import torch.multiprocessing as mp

    single = _guard_cost(repeats)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "cost.json")
        mp.spawn(_guard_worker, args=(2, port, repeats, out), nprocs=2, join=True)
        ddp = json.loads(Path(out).read_text())
    return {"one_process_us": round(1e6 * single, 2), "two_gloo_processes_us": round(1e6 * ddp, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="CIFAR ResNet-18 width (64 = the recipe)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--guard-repeats", type=int, default=2000)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    res = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "step": step_times(a),
        "finite_guard": guard_costs(a.guard_repeats),
    }
    step_ms = res["step"]["channels_last_step_ms"]
    res["finite_guard"]["two_processes_fraction_of_step"] = round(
        res["finite_guard"]["two_gloo_processes_us"] / (1000 * step_ms), 5
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "settings"}, indent=2))


if __name__ == "__main__":
    main()
