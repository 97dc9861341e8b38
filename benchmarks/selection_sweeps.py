"""Label-free selection on real sweeps: how well does each label-free score rank runs, and what
does picking by it cost against picking by test labels?

Per data setting, a 16-run sweep of the main job's recipe (MoCo v2 + CLD, Fashion-MNIST, small
ConvNet) at a fixed number of optimiser steps: λ including 0, k, τ_G and the learning rate. Each
run is a plain `cld-train` in ``outputs/selection_sweeps/<setting>/<run>``; every label-free
score (retrieval, alignment/uniformity, group agreement, RankMe, α-ReQ) and the kNN top-1 come
from its ``metrics.json``. The Spearman ρ and the regret of each score (best kNN minus the kNN of
the run the score picks) come from ``cld-report outputs/selection_sweeps/<setting>``. Hours on 2
CPU cores, resumable (run it again to continue):

    python benchmarks/selection_sweeps.py [--settings balanced lt100 subset4k] [--steps 2000]
        [--repeat-seeds 1 2] [--heads mlp normmlp]

``--repeat-seeds`` adds the main job's setting and MoCo alone (λ = 0, lr 0.03) at those seeds: the
seed-to-seed spread of one setting, to set beside the spread of the sweep (cld-report groups the
repeats with their setting: mean ± std over seeds). ``--heads`` adds the main job's setting with
other group heads ``f_G`` (``cld.head``; the main job's is ``linear``, the reference MoCo+CLD's
NormLinear / NormMLP).
"""

from __future__ import annotations

import argparse
import itertools
import random
from _queue import ROOT, run_queue
from pathlib import Path

from where_cld_pays import SETTINGS

LAMBDAS = [0.25, 0.8, 2.0]
CLUSTERS = [10, 32, 64]
TAUS = [0.1, 0.2, 0.5]
LRS = [0.015, 0.03, 0.06]
DEFAULT = (0.8, 32, 0.2, 0.03)  # the main job's λ, k, τ_G, lr
BASE = (0.0, 32, 0.2, 0.03)  # MoCo alone at the main job's lr


def design(runs: int = 16, seed: int = 0) -> list[tuple[float, int, float, float]]:
    """(λ, k, τ_G, lr) of every run: λ = 0 at each lr (k and τ_G do nothing there), the main
    job's setting, then distinct seeded draws from the λ > 0 grid."""
    rows = [(0.0, 32, 0.2, lr) for lr in LRS] + [DEFAULT]
    grid = [c for c in itertools.product(LAMBDAS, CLUSTERS, TAUS, LRS) if c != DEFAULT]
    random.Random(seed).shuffle(grid)
    return rows + grid[: runs - len(rows)]


def overrides(
    setting: str, row: tuple, steps: int, seed: int, baselines: bool, head: str | None = None
) -> list[str]:
    weight, k, tau, lr = row
    data, images = SETTINGS[setting]
    warmup = round(140 / (images // 128), 4)  # 140 steps, as the main job's 0.3 epoch of 60k
    return [
        "experiment=fashion_mnist_moco_cld",
        "data.crop_size=null",  # 28 px views, as in the committed sweeps (the main job: 24 px)
        *data,
        f"cld.weight={weight}",
        f"cld.num_clusters={k}",
        f"cld.temperature={tau}",
        f"method.lr={lr}",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={steps}",
        "trainer.check_val_every_n_epoch=null",
        f"trainer.val_check_interval={steps // 2}",
        f"method.warmup_epochs={warmup}",
        "callbacks.checkpoint_last.every_n_epochs=null",
        f"callbacks.checkpoint_last.every_n_train_steps={steps // 2}",
        f"baselines={str(baselines).lower()}",
        f"seed={seed}",
        *([f"cld.head={head}"] if head else []),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--settings", nargs="+", default=["balanced", "lt100", "subset4k"])
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat-seeds", type=int, nargs="*", default=[])
    p.add_argument("--heads", nargs="*", default=[], help="group heads to add (cld.head)")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "outputs/selection_sweeps")
    args = p.parse_args()
    for setting in args.settings:
        plan = []
        for i, row in enumerate(design(args.runs, args.seed)):
            name = f"r{i:02d}_lam{row[0]}_k{row[1]}_tau{row[2]}_lr{row[3]}"
            plan.append((name, overrides(setting, row, args.steps, args.seed, baselines=i == 0)))
        for head in args.heads:
            name = f"head_{head}_lam{DEFAULT[0]}_k{DEFAULT[1]}_tau{DEFAULT[2]}_lr{DEFAULT[3]}"
            plan.append((name, overrides(setting, DEFAULT, args.steps, args.seed, False, head)))
        for seed in args.repeat_seeds:
            for row in (DEFAULT, BASE):
                name = f"repeat_lam{row[0]}_k{row[1]}_tau{row[2]}_lr{row[3]}_s{seed}"
                plan.append((name, overrides(setting, row, args.steps, seed, baselines=False)))
        run_queue(
            plan,
            args.work / setting,
            parallel=args.parallel,
            threads=args.threads,
            study=f"{args.work.name}/{setting}",
        )


if __name__ == "__main__":
    main()
