"""Isolated cost of CLD's group branch per step: group head + 2 batch k-means + cross-level loss,
forward and backward (batch 256, feature 128 -> g 128, k 128, 5 iterations) on the CPU.

Writes benchmarks/results/cld_overhead.json. Complements step_time.py, whose whole-step ratios are
within step-to-step noise: this isolates the part CLD adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cld_lightning.cld import cross_level_loss
from cld_lightning.cld.heads import build_head


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--feature-dim", type=int, default=128, help="backbone feature (width 16: 128)")
    p.add_argument("--num-clusters", type=int, default=128)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "cld_overhead.json",
    )
    a = p.parse_args()
    torch.manual_seed(0)
    head = build_head("linear", a.feature_dim, 128)
    f1 = torch.randn(a.batch_size, a.feature_dim, requires_grad=True)
    f2 = torch.randn(a.batch_size, a.feature_dim, requires_grad=True)

    def step() -> None:
        g1, g2 = F.normalize(head(f1), dim=1), F.normalize(head(f2), dim=1)
        cross_level_loss(g1, g2, a.num_clusters, 0.2, a.iters).backward()

    for _ in range(5):
        step()
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    res = {
        "settings": vars(a) | {"out": str(a.out)},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "median_ms": 1000 * statistics.median(times),
        "p90_ms": 1000 * sorted(times)[int(0.9 * len(times))],
    }
    step_time = Path(__file__).resolve().parent / "results" / "step_time.json"
    if step_time.is_file():
        st = json.loads(step_time.read_text())
        for r in st["results"]:
            if r["config"] == "npid_2view" and r["width"] == 16:
                res["npid_2view_w16_step_ms"] = 1000 * r["step_time_s"]
                res["cld_share_of_npid_2view_w16_step"] = (
                    res["median_ms"] / res["npid_2view_w16_step_ms"]
                )
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
