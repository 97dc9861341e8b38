"""How well does the label-free selection score rank runs? A 12-run λ x k x τ_G sweep.

NPID+CLD on Fashion-MNIST, small CIFAR ResNet-18 on the CPU. For each run: the label-free
criterion on held-out images (labels unused) and the weighted-kNN top-1 (labels used only for this
report). Spearman rank correlation between each criterion and kNN top-1.
Writes benchmarks/results/selection_sweep.json.

    python benchmarks/selection_sweep.py [--epochs 3] [--train-samples 5000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
from pathlib import Path

import torch
from _runs import ROOT, run_train
from scipy.stats import spearmanr

GRID = {
    "cld.weight": [0.0, 0.25, 1.0, 4.0],
    "cld.num_clusters": [10, 64, 200],
    "cld.temperature": [0.05, 0.2, 0.8],
}
CRITERIA = (
    "label_free_score",
    "retrieval_top1",
    "alignment",
    "uniformity",
    "group_agreement",
    "group_ami",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=5000)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--selection-images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/selection_sweep.json")
    args = p.parse_args()
    combos = list(itertools.product(*GRID.values()))
    random.Random(args.seed).shuffle(combos)
    combos = combos[: args.runs]
    common = [
        "experiment=fashion_mnist_npid_cld",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.check_val_every_n_epoch={args.epochs}",
        f"data.max_train_samples={args.train_samples}",
        f"data.max_test_samples={args.test_samples}",
        "pixel_baseline=false",
        "plots.enabled=false",
        f"selection.num_images={args.selection_images}",
        "method.warmup_epochs=1",
        "callbacks.checkpoint.save_top_k=0",
        f"seed={args.seed}",
    ]
    work = Path(tempfile.mkdtemp(prefix="selection_sweep_"))
    out: dict = {
        "config": vars(args) | {"out": str(args.out)},
        "grid": GRID,
        "runs": [],
        "torch": torch.__version__,
    }
    for i, combo in enumerate(combos):
        overrides = [f"{k}={v}" for k, v in zip(GRID, combo, strict=True)]
        m = run_train([*common, *overrides], work / f"run{i:02d}")
        row = {
            "overrides": overrides,
            "knn/top1": m["knn/top1"],
            "command": m["command"],
            "wall_s": m["wall_s"],
            **{c: m[f"selection/{c}"] for c in CRITERIA if f"selection/{c}" in m},
        }
        out["runs"].append(row)
        print(json.dumps(row), flush=True)
        args.out.write_text(json.dumps(out, indent=2))
    knn = [r["knn/top1"] for r in out["runs"]]
    out["spearman_vs_knn_top1"] = {}
    for c in CRITERIA:
        vals = [r.get(c) for r in out["runs"]]
        if all(v is not None and v == v for v in vals):
            rho, pval = spearmanr(vals, knn)
            out["spearman_vs_knn_top1"][c] = {"rho": float(rho), "p": float(pval)}
    best = max(out["runs"], key=lambda r: r["label_free_score"])
    out["selected_by_label_free_score"] = {
        "overrides": best["overrides"],
        "knn/top1": best["knn/top1"],
        "best_knn/top1": max(knn),
        "median_knn/top1": sorted(knn)[len(knn) // 2],
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["spearman_vs_knn_top1"], indent=2))
    print(json.dumps(out["selected_by_label_free_score"], indent=2))


if __name__ == "__main__":
    main()
