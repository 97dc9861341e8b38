"""NPID vs NPID+CLD (equal views) on Fashion-MNIST: balanced, long-tail (ρ=100), correlated.

Small CIFAR ResNet-18 (width 16) on the CPU, same epochs for both, 3 seeds; weighted-kNN top-1
(and many/medium/few for long-tail). Writes benchmarks/results/fmnist_cld_experiment.json.

    python benchmarks/fmnist_cld_experiment.py [--epochs 3] [--train-samples 5000] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from _runs import ROOT, run_train

SETTINGS = {
    "balanced": [],
    "long_tail_rho100": ["data=fashion_mnist_lt", "data.imbalance_ratio=100"],
    "correlated": ["data=fashion_mnist_correlated"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--copies", type=int, default=10, help="correlated: near-duplicates per source")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/fmnist_cld_experiment.json"
    )
    args = p.parse_args()
    common = [
        "experiment=fashion_mnist_npid_cld",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.check_val_every_n_epoch={args.epochs}",
        "method.num_views=2",
        "data.num_views=2",
        f"data.max_test_samples={args.test_samples}",
        "baselines=false",
        "plots.enabled=false",
        "selection.enabled=false",
        "method.warmup_epochs=1",
        "callbacks.checkpoint.save_top_k=0",
    ]
    results: dict = {"config": vars(args) | {"out": str(args.out)}, "runs": [], "summary": {}}
    results["machine"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    work = Path(tempfile.mkdtemp(prefix="fmnist_exp_"))
    for setting in args.settings:
        data = list(SETTINGS[setting])
        if setting == "correlated":
            data += [
                f"data.copies={args.copies}",
                f"data.num_sources={args.train_samples // args.copies}",
            ]
        else:
            data += [f"data.max_train_samples={args.train_samples}"]
        for method, cld in (("npid", "cld=off"), ("npid_cld", "cld=on")):
            for seed in args.seeds:
                tag = f"{setting}-{method}-s{seed}"
                m = run_train([*common, *data, cld, f"seed={seed}"], work / tag)
                row = {
                    "setting": setting,
                    "method": method,
                    "seed": seed,
                    **{k: v for k, v in m.items() if k.startswith("knn/")},
                    "command": m["command"],
                    "wall_s": m["wall_s"],
                }
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                args.out.write_text(json.dumps(results, indent=2))
    for setting in args.settings:
        for method in ("npid", "npid_cld"):
            rows = [r for r in results["runs"] if r["setting"] == setting and r["method"] == method]
            entry = {}
            for key in ("knn/top1", "knn/many", "knn/medium", "knn/few"):
                vals = [r[key] for r in rows if key in r and r[key] == r[key]]
                if vals:
                    entry[key] = {
                        "mean": statistics.mean(vals),
                        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "n": len(vals),
                    }
            results["summary"][f"{setting}/{method}"] = entry
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
