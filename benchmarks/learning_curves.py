"""Learning curves: weighted-kNN top-1 on the 10k Fashion-MNIST test set after every epoch.

Pairs, each at equal views and with the main job's backbone and augmentation:

* ``npid`` vs ``npid_cld`` (2 views each) on the full 60k set, seeds 0, 1, 2;
* ``moco`` vs ``moco_cld`` with the reference MoCo+CLD 3-crop scheme (2 query crops, 1 key crop);
* ``npid`` vs ``npid_cld`` on the long-tail (ρ = 100) and correlated (10 copies of 6,000 sources)
  variants.

Runs go in priority order (every pair's seed 0 first) and the JSON is rewritten while a run
trains (its finished epochs), so a long benchmark can be committed part-way and resumed: a run
already marked ``done`` in the JSON is skipped, an interrupted one continues from its
``checkpoints/last.ckpt`` (written every epoch; exact resume). Each run's raw-pixel and untrained-network kNN
(same memory/test sets) are stored with it. Not a test; hours on 2 CPU cores.

    python benchmarks/learning_curves.py [--epochs 30] [--only balanced/npid/s0 ...]
    python benchmarks/learning_curves.py --plot-only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/learning_curves.json"

METHODS = {
    "npid": ["experiment=fashion_mnist_npid_cld", "cld=off"],
    "npid_cld": ["experiment=fashion_mnist_npid_cld"],
    "moco": [
        "experiment=fashion_mnist_moco_cld",
        "data.crop_size=null",  # 28 px views, as in the committed curves (the main job: 24 px)
        "cld=off",
        "method.num_crops=3",
        "method.symmetric=false",
        "data.num_views=3",
    ],
    "moco_cld": [
        "experiment=fashion_mnist_moco_cld",
        "data.crop_size=null",  # 28 px views, as in the committed curves (the main job: 24 px)
        "method.num_crops=3",
        "method.symmetric=false",
        "data.num_views=3",
    ],
}
SETTINGS = {
    "balanced": ["data.max_train_samples=null"],
    "long_tail_rho100": ["data=fashion_mnist_lt", "data.imbalance_ratio=100"],
    "correlated_x10": ["data=fashion_mnist_correlated", "data.copies=10", "data.num_sources=6000"],
}


def plan(seeds: list[int]) -> list[tuple[str, str, int]]:
    """(setting, method, seed) in priority order: first seed of every pair, then more seeds."""
    first = [
        ("balanced", "npid", seeds[0]),
        ("balanced", "npid_cld", seeds[0]),
        ("balanced", "moco", seeds[0]),
        ("balanced", "moco_cld", seeds[0]),
        ("long_tail_rho100", "npid", seeds[0]),
        ("long_tail_rho100", "npid_cld", seeds[0]),
        ("correlated_x10", "npid", seeds[0]),
        ("correlated_x10", "npid_cld", seeds[0]),
    ]
    more = [("balanced", m, s) for s in seeds[1:] for m in ("npid", "npid_cld")]
    return first + more


def parse_key(key: str) -> tuple[str, str, int]:
    """``setting/method/sSEED`` -> (setting, method, seed); any seed of any pair may be asked for."""
    parts = key.split("/")
    if (
        len(parts) != 3
        or parts[0] not in SETTINGS
        or parts[1] not in METHODS
        or not parts[2].startswith("s")
        or not parts[2][1:].isdigit()
    ):
        raise SystemExit(
            f"--only {key!r}: expected setting/method/sSEED with setting in {sorted(SETTINGS)} "
            f"and method in {sorted(METHODS)}, e.g. correlated_x10/npid/s1"
        )
    return parts[0], parts[1], int(parts[2][1:])


def read_curve(run_dir: Path, max_epochs: int | None = None) -> tuple[list[int], list[float]]:
    """(epochs, knn/top1) rows of a run's CSVLogger files (empty when not written yet). A run
    resumed from its last.ckpt logs to a new ``version_N``: all versions are read, by epoch."""
    by_epoch: dict[int, float] = {}  # the final trainer.validate adds a row "max_epochs + 1"
    for csv_path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with csv_path.open() as f:
            for row in csv.DictReader(f):
                if row.get("knn/top1"):
                    by_epoch[int(row["epoch"]) + 1] = round(float(row["knn/top1"]), 3)
    epochs = [e for e in sorted(by_epoch) if max_epochs is None or e <= max_epochs]
    top1 = [by_epoch[e] for e in epochs]
    return epochs, top1


class Job:
    """One `cld-train` subprocess whose finished epochs are read back while it trains."""

    def __init__(
        self,
        key: str,
        overrides: list[str],
        work: Path,
        results: dict,
        threads: int,
        max_epochs: int,
    ) -> None:
        self.key = key
        self.max_epochs = max_epochs
        self.run_dir = work / key.replace("/", "_")
        args = [
            *overrides,
            f"hydra.run.dir={self.run_dir}",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            "trainer.check_val_every_n_epoch=1",
            "plots.enabled=false",
            "selection.enabled=false",
            "callbacks.checkpoint.save_top_k=0",
        ]
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():  # an interrupted run (session end) continues from its last epoch
            args.append(f"ckpt_path={last}")
        self.entry = results["runs"].setdefault(key, {})
        self.entry.clear()
        self.entry.update({"command": "cld-train " + shlex.join(overrides), "status": "running"})
        if last.is_file():
            self.entry["resumed_from"] = str(last)
        env = {**os.environ, "WANDB_MODE": "offline"}
        if threads > 0:
            env["OMP_NUM_THREADS"] = str(threads)
            self.entry["torch_threads"] = threads
        self.start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = (self.run_dir.parent / f"{self.run_dir.name}.log").open("w")
        cmd = [sys.executable, "-m", "cld_lightning.app.train", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def refresh(self) -> bool:
        """Update the entry; True while the process runs."""
        running = self.proc.poll() is None
        self.entry["epochs"], self.entry["knn_top1"] = read_curve(self.run_dir, self.max_epochs)
        self.entry["wall_s"] = round(time.perf_counter() - self.start, 1)
        if not running:
            if self.proc.returncode != 0:
                self.entry["status"] = f"failed ({self.proc.returncode}); log {self.log.name}"
            else:
                final = json.loads((self.run_dir / "metrics.json").read_text())
                self.entry["final"] = {
                    k: round(v, 3) for k, v in final.items() if k.startswith("knn/")
                }
                self.entry["status"] = "done"
        return running


def write(results: dict, out: Path) -> None:
    results["summary"] = summarize(results)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out)


BASELINES = ("knn/pixel_top1", "knn/random_init_top1", "knn/random_init_backbone_top1")


def baselines(entries: list[dict]) -> dict[str, float]:
    """Raw-pixel and untrained-network kNN, mean over the runs that have them (a long-tail or
    correlated subset and the seeded random init change with the seed)."""
    out = {}
    for name in BASELINES:
        values = [e["final"][name] for e in entries if e.get("final", {}).get(name) is not None]
        if values:
            out[name] = round(statistics.mean(values), 2)
    return out


def summarize(results: dict) -> dict:
    """Per (setting, method): final and best epoch's kNN, mean ± std over finished seeds."""
    groups: dict[str, list[dict]] = {}
    for key, entry in results["runs"].items():
        if entry.get("status") == "done" and entry.get("knn_top1"):
            setting, method, _ = key.split("/")
            groups.setdefault(f"{setting}/{method}", []).append(entry)
    summary = {}
    for name, entries in sorted(groups.items()):
        last = [e["knn_top1"][-1] for e in entries]
        best = [max(e["knn_top1"]) for e in entries]
        base = baselines(entries)

        def ms(v: list[float]) -> dict:
            return {
                "mean": round(statistics.mean(v), 2),
                "std": round(statistics.stdev(v), 2) if len(v) > 1 else 0.0,
            }

        summary[name] = {
            "seeds": len(entries),
            "epochs": entries[0]["epochs"][-1],
            "last": ms(last),
            "best": ms(best),
            "pixel_top1": base.get("knn/pixel_top1"),
            "random_init_top1": base.get("knn/random_init_top1"),
            "random_init_backbone_top1": base.get("knn/random_init_backbone_top1"),
        }
    return summary


def plot(results: dict, png: Path) -> None:
    """Accuracy vs epoch per setting: mean ± std band per method, pixel and untrained lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = [s for s in SETTINGS if any(k.startswith(s + "/") for k in results["runs"])]
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4), squeeze=False)
    colors = {
        "npid": "tab:blue",
        "npid_cld": "tab:orange",
        "moco": "tab:green",
        "moco_cld": "tab:red",
    }
    for ax, setting in zip(axes[0], settings, strict=True):
        base = baselines([e for k, e in results["runs"].items() if k.startswith(setting + "/")])
        for method, color in colors.items():
            curves = [
                e
                for k, e in results["runs"].items()
                if k.startswith(f"{setting}/{method}/") and e.get("knn_top1")
            ]
            if not curves:
                continue
            # per epoch, the seeds that reached it (an unfinished seed ends its share early)
            n = max(len(e["knn_top1"]) for e in curves)
            acc = np.full((len(curves), n), np.nan)
            for i, e in enumerate(curves):
                acc[i, : len(e["knn_top1"])] = e["knn_top1"]
            x = np.arange(1, n + 1)
            mean, std = np.nanmean(acc, 0), np.nanstd(acc, 0)
            done = sum(e.get("status") == "done" for e in curves)
            label = f"{method} ({done} seed{'s' * (done != 1)}"
            label += f" + {len(curves) - done} partial)" if len(curves) > done else ")"
            ax.plot(x, mean, color=color, label=label)
            band = (~np.isnan(acc)).sum(0) > 1
            if band.any():
                ax.fill_between(
                    x[band], (mean - std)[band], (mean + std)[band], color=color, alpha=0.2
                )
        if base.get("knn/pixel_top1") is not None:
            ax.axhline(base["knn/pixel_top1"], color="k", ls="--", lw=1, label="raw pixels (mean)")
        if base.get("knn/random_init_top1") is not None:
            ax.axhline(
                base["knn/random_init_top1"], color="gray", ls=":", lw=1, label="untrained (head)"
            )
        if base.get("knn/random_init_backbone_top1") is not None:
            ax.axhline(
                base["knn/random_init_backbone_top1"],
                color="gray",
                ls="-.",
                lw=1,
                label="untrained (backbone)",
            )
        ax.set_title(f"Fashion-MNIST {setting}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weighted kNN top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--only", nargs="*", default=None, help="run keys setting/method/sSEED (any seed), in order"
    )
    p.add_argument(
        "--extra", nargs="*", default=[], help="more cld-train overrides (e.g. trainer=gpu)"
    )
    p.add_argument("--work", type=Path, default=ROOT / "outputs/learning_curves")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--poll", type=float, default=30.0)
    p.add_argument("--parallel", type=int, default=1, help="runs at once (a pair side by side: 2)")
    p.add_argument(
        "--threads", type=int, default=0, help="OMP_NUM_THREADS per run (0 = torch default)"
    )
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    if not args.plot_only:
        import torch

        results["config"] = {"epochs": args.epochs, "seeds": args.seeds, "extra": args.extra}
        results["machine"] = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        }
        args.work.mkdir(parents=True, exist_ok=True)
        todo = []
        runs = plan(args.seeds) if args.only is None else [parse_key(k) for k in args.only]
        for setting, method, seed in runs:
            key = f"{setting}/{method}/s{seed}"
            if results["runs"].get(key, {}).get("status") == "done":
                continue
            overrides = [
                *METHODS[method],
                *SETTINGS[setting],
                f"trainer.max_epochs={args.epochs}",
                f"seed={seed}",
                *args.extra,
            ]
            todo.append((key, overrides))
        running: list[Job] = []
        while todo or running:
            while todo and len(running) < args.parallel:
                key, overrides = todo.pop(0)
                running.append(Job(key, overrides, args.work, results, args.threads, args.epochs))
            time.sleep(args.poll)
            running = [job for job in running if job.refresh()]
            write(results, args.out)
            plot(results, args.out.with_suffix(".png"))
    write(results, args.out)
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
