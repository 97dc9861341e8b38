"""Where CLD pays: NPID and MoCo, each with and without CLD, at equal views and equal optimiser
steps (the main job's 6,552 = 14 epochs x 468 steps of 128 images), across data settings.

Every run is a plain `cld-train` (folder ``outputs/where_cld_pays/<setting>__<method>__s<seed>``);
the tables, the plot and ``benchmarks/results/where_cld_pays.json`` come from
``cld-report outputs/where_cld_pays``. Warm-up is the same number of steps in every setting
(140 for MoCo, 468 for NPID, as the recipes' 0.3 / 1 epoch of the full set); kNN is evaluated every
936 steps. Hours on 2 CPU cores, resumable (run it again to continue):

    python benchmarks/where_cld_pays.py [--settings balanced lt100] [--methods moco moco_cld]
        [--seeds 0 1 2] [--steps 6552]
"""

from __future__ import annotations

import argparse
from _queue import ROOT, run_queue
from pathlib import Path

# data.crop_size=null: 28 px training views, as when the committed tables were measured (the main
# job trains on 24 px views since 2026-12-08; docs/BENCHMARKS.md "Main job")
METHODS = {
    "moco": ["experiment=fashion_mnist_moco_cld", "cld=off", "data.crop_size=null"],
    "moco_cld": ["experiment=fashion_mnist_moco_cld", "data.crop_size=null"],
    "npid": ["experiment=fashion_mnist_npid_cld", "cld=off"],
    "npid_cld": ["experiment=fashion_mnist_npid_cld"],
}
WARMUP_STEPS = {"moco": 140, "moco_cld": 140, "npid": 468, "npid_cld": 468}
# setting -> (overrides, training images); steps per epoch = images // 128 (drop_last)
SETTINGS = {
    "balanced": ([], 60000),
    "lt100": (["data=fashion_mnist_lt", "data.imbalance_ratio=100"], 14886),
    "lt10": (["data=fashion_mnist_lt", "data.imbalance_ratio=10"], 24516),
    "correlated_x10": (
        ["data=fashion_mnist_correlated", "data.copies=10", "data.num_sources=6000"],
        60000,
    ),
    "subset4k": (["data.max_train_samples=4000"], 4000),
    # real handwritten digits, no download (benchmarks/build_digits_folder.py builds the folder)
    "digits": (
        [
            "data=imagefolder",
            f"data.root={ROOT / 'outputs/digits_folder'}",
            "data.test_dir=test",
            "data.image_size=28",
            "data.in_channels=1",
        ],
        1438,
    ),
}


def overrides(setting: str, method: str, seed: int, steps: int, val_every: int) -> list[str]:
    data, images = SETTINGS[setting]
    per_epoch = images // 128
    warmup = round(WARMUP_STEPS[method] / per_epoch, 4)
    return [
        *METHODS[method],
        *data,
        "trainer.max_epochs=-1",
        f"trainer.max_steps={steps}",
        "trainer.check_val_every_n_epoch=null",
        f"trainer.val_check_interval={val_every}",
        f"method.warmup_epochs={warmup}",
        "callbacks.checkpoint_last.every_n_epochs=null",
        "callbacks.checkpoint_last.every_n_train_steps=468",
        f"seed={seed}",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=6552)
    p.add_argument("--val-every", type=int, default=936)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "outputs/where_cld_pays")
    args = p.parse_args()
    plan = [
        (
            f"{setting}__{method}__s{seed}",
            overrides(setting, method, seed, args.steps, args.val_every),
        )
        for seed in args.seeds
        for setting in args.settings
        for method in args.methods
    ]
    if "digits" in args.settings and not (ROOT / "outputs/digits_folder/train").is_dir():
        from build_digits_folder import build

        build(ROOT / "outputs/digits_folder")
    run_queue(plan, args.work, parallel=args.parallel, threads=args.threads, study=args.work.name)


if __name__ == "__main__":
    main()
