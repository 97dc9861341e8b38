"""Why does NPID fall below the untrained network early on? One change per row, 3 seeds.

Budget of the report (issue 9): 4,000 training images, 8 epochs, batch 128, two views, NPID alone;
row 0 is the former main job's recipe (CIFAR ResNet-18 width 16, NPID augmentation with
RandomResizedCrop scale 0.2 and flips, 1 warm-up epoch, bank momentum 0.5, lr 0.06). Every row
reports the learned embedding's weighted kNN next to the same run's raw-pixel and untrained-network
kNN (same memory and test sets). Writes benchmarks/results/npid_ablation.json (rewritten after
every run, finished runs skipped on a rerun).

    python benchmarks/npid_ablation.py [--seeds 0 1 2] [--rows base bank_init ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from _runs import ROOT, run_train

BASE = [
    "experiment=fashion_mnist_npid_cld",
    "cld=off",
    "backbone=cifar_resnet18_small",
    "data.augmentation=npid",
    "data.crop_min_scale=0.2",
    "data.max_train_samples=4000",
    "data.batch_size=128",
    "data.augment_on=loader",
    "data.num_workers=2",
    "data.persistent_workers=true",
    "data.val_batch_size=256",
    "method.num_views=2",
    "method.lr=0.06",
    "method.weight_decay=5e-4",
    "cld.num_clusters=64",
    "cld.weight=1.0",
    "cld.temperature=0.2",
    "method.warmup_epochs=1",
    "method.bank_momentum=0.5",
    "method.bank_init=random",
    "trainer.max_epochs=8",
    "trainer.precision=32-true",  # pinned: the experiment file moved on to bf16
    "trainer.check_val_every_n_epoch=8",
    "plots.enabled=false",
    "selection.enabled=false",
    "callbacks.checkpoint.save_top_k=0",
]
ROWS: dict[str, tuple[str, list[str]]] = {
    "base": ("former main-job recipe (reference NPID settings)", []),
    "bank_init": (
        "bank rows start as the untrained network's embeddings",
        ["method.bank_init=embeddings"],
    ),
    "crop_0.5": (
        "RandomResizedCrop scale (0.5, 1) instead of (0.2, 1)",
        ["data.crop_min_scale=0.5"],
    ),
    "no_warmup": ("no learning-rate warm-up", ["method.warmup_epochs=0"]),
    "bank_m0": (
        "bank momentum 0 (rows = latest embedding) instead of 0.5",
        ["method.bank_momentum=0.0"],
    ),
    "lr_0.03": ("learning rate 0.03 instead of 0.06", ["method.lr=0.03"]),
    "small_cnn": (
        "main job's backbone (small_cnn width 16)",
        ["backbone=small_cnn", "backbone.width=16"],
    ),
    "epochs_16": (
        "2x the epochs (16)",
        ["trainer.max_epochs=16", "trainer.check_val_every_n_epoch=16"],
    ),
    "cld": ("NPID+CLD (λ 1, k 64, τ_G 0.2), same views", ["cld=on"]),
}
OUT = ROOT / "benchmarks/results/npid_ablation.json"
KEY_ROWS = ("base", "bank_init", "crop_0.5", "cld")


def summarize(runs: list[dict]) -> dict:
    out = {}
    for row, (label, _) in ROWS.items():
        rs = [r for r in runs if r["row"] == row]
        if not rs:
            continue
        entry: dict = {"label": label, "seeds": len(rs)}
        for key in (
            "knn/top1",
            "knn/pixel_top1",
            "knn/random_init_top1",
            "knn/random_init_backbone_top1",
            "knn/backbone_top1",
        ):
            vals = [r[key] for r in rs if key in r]
            if vals:
                entry[key] = {
                    "mean": round(statistics.mean(vals), 2),
                    "std": round(statistics.stdev(vals), 2) if len(vals) > 1 else 0.0,
                }
        gaps = [
            r["knn/top1"] - r["knn/random_init_top1"] for r in rs if "knn/random_init_top1" in r
        ]
        if gaps:
            entry["top1_minus_untrained"] = round(statistics.mean(gaps), 2)
        out[row] = entry
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(ROWS))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--work", type=Path, default=ROOT / "outputs/npid_ablation")
    args = p.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    results["config"] = {"base": BASE, "rows": {k: v[1] for k, v in ROWS.items()}}
    results["machine"] = {"cpu": platform.processor() or platform.machine()}
    done = {(r["row"], r["seed"]) for r in results["runs"]}
    # every row at the first seed, then the key rows' other seeds, then the remaining ones: a
    # partial file always holds a full first-seed table
    order = [(args.seeds[0], row) for row in args.rows]
    order += [(s, r) for s in args.seeds[1:] for r in args.rows if r in KEY_ROWS]
    order += [(s, r) for s in args.seeds[1:] for r in args.rows if r not in KEY_ROWS]
    for seed, row in order:
        if (row, seed) in done:
            continue
        m = run_train([*BASE, *ROWS[row][1], f"seed={seed}"], args.work / f"{row}_s{seed}")
        entry = {"row": row, "seed": seed, "wall_s": m["wall_s"], "command": m["command"]}
        entry.update({k: round(v, 3) for k, v in m.items() if k.startswith("knn/")})
        results["runs"].append(entry)
        results["summary"] = summarize(results["runs"])
        args.out.write_text(json.dumps(results, indent=1))
        print(json.dumps(entry), flush=True)
    results["summary"] = summarize(results["runs"])
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
