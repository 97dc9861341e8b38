"""Training throughput on one GPU: model-only vs the training loop with each input pipeline.

Two workloads, NPID+CLD (2 views) trained with Lightning, fp32 and bf16-mixed:

* ``cifar``: CIFAR ResNet-18 width 64, 32 px, batch 512; synthetic uint8 CIFAR-like images in
  memory (CIFAR pickles written to a temp folder, loaded as one tensor);
* ``jpeg``: ResNet-50 (torchvision layout) at 224 px, batch 128; synthetic JPEGs of ImageNet-like
  sizes (500x375, 375x500, 400x400; noisy content, ~100 KB each) written to a temp ImageFolder.

Modes (images/s = source images per second, each seen as 2 views, measured after warm-up steps):

* ``model_only``: the same Lightning loop with fixed views already on the device (upper bound);
* ``loader``: ``data.augment_on=loader`` (per-sample CPU augmentation in ``--workers`` workers);
* ``gpu``: ``data.augment_on=gpu`` (uint8 batches, batched augmentation on the GPU; on the JPEG
  folder the workers still decode with PIL and the crops are taken per image);
* ``torchvision`` (jpeg only): ``data.decoder=torchvision data.augment_on=gpu`` (nvJPEG);
* ``dali`` (jpeg only, when ``nvidia.dali`` imports): ``data.decoder=dali``.

    PYTHONPATH=src python scripts/gpu_throughput.py                 # one H200: ~4-6 min
    PYTHONPATH=src python scripts/gpu_throughput.py --smoke         # CPU, tiny, ~20 s

Writes ``$OUT/gpu_throughput.json`` when ``$OUT`` is set, else
``benchmarks/results/gpu_throughput.json`` (``--out`` overrides). A mode that fails is recorded
with its error and the script goes on; exit status 1 when any mode failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cld_lightning.data import SSLDataModule, synthetic
from cld_lightning.methods import NPID
from cld_lightning.models import build_backbone

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_throughput.json"
JPEG_SIZES = ((375, 500), (500, 375), (400, 400))


class Timer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of step ``total - 1``, synchronised
    only there (a per-step sync or ``loss.item()`` would serialise CPU and GPU work)."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total
        self.t0: float | None = None
        self.t1: float | None = None
        self.steps = 0
        self.losses: list[float] = []

    def _sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.steps += 1
        if batch_idx == self.total - 1:
            self._sync(pl_module)
            self.t1 = time.perf_counter()
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.losses.append(float(loss.detach()))


class IndexOnly(Dataset):
    """Yields only ``(0, 0, index)``: the model-only module swaps in fixed device views."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return 0, 0, i


class ModelOnlyNPID(NPID):
    """NPID whose training batches are fixed normalised views already on the device."""

    def setup_views(self, batch_size: int, size: int, num_views: int) -> None:
        g = torch.Generator().manual_seed(0)
        self._fixed = [
            torch.randn(batch_size, 3, size, size, generator=g) for _ in range(num_views)
        ]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not self.trainer.training:
            return batch
        _, target, index = batch
        if self._fixed[0].device != self.device:
            self._fixed = [v.to(self.device) for v in self._fixed]
        return list(self._fixed), target, index


def _write_jpegs(args: tuple[str, int, int, int]) -> None:
    from PIL import Image

    root, start, count, classes = args
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        h, w = JPEG_SIZES[i % len(JPEG_SIZES)]
        low = rng.uniform(0, 255, size=(h // 25 + 2, w // 25 + 2, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR), dtype=np.float32)
        img = np.clip(img + rng.normal(0, 18, size=img.shape), 0, 255).astype(np.uint8)
        d = Path(root) / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:06d}.jpg", format="JPEG", quality=90)


def write_jpeg_folder(root: Path, n_train: int, n_val: int, classes: int, procs: int) -> None:
    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        chunk = max(1, -(-n // max(1, procs)))
        jobs += [(str(root / split), s, min(chunk, n - s), classes) for s in range(0, n, chunk)]
    if procs > 1:
        with ProcessPoolExecutor(procs) as ex:
            list(ex.map(_write_jpegs, jobs))
    else:
        for j in jobs:
            _write_jpegs(j)


def run_mode(
    work: dict[str, Any], mode: str, precision: str, args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    pl.seed_everything(0)
    cuda = args.device == "cuda"
    steps = args.warmup + measured_steps(mode, args)
    batch = work["batch_size"]
    n_train = batch * steps
    dm: SSLDataModule | None = None
    if mode != "model_only":
        kw: dict[str, Any] = dict(augment_on="loader", decoder="pil")
        if mode == "gpu":
            kw["augment_on"] = "gpu" if cuda else "device"
        elif mode in ("torchvision", "dali"):
            kw.update(augment_on="gpu" if cuda else "device", decoder=mode)
        dm = SSLDataModule(
            dataset=work["dataset"],
            root=str(root),
            batch_size=batch,
            num_workers=args.workers,
            augmentation="npid",
            image_size=work["image_size"],
            pin_memory=cuda,
            persistent_workers=False,  # one epoch; no workers left behind between modes
            download=False,
            max_test_samples=8,
            **kw,
        )
        dm.setup("fit")
        n_train = dm.num_train_samples
    backbone = build_backbone(
        work["backbone"], width=work["width"], in_channels=3, channels_last=cuda
    )
    cls = ModelOnlyNPID if mode == "model_only" else NPID
    model = cls(
        backbone,
        n_train,
        {"num_clusters": min(128, batch // 2), "temperature": 0.2},
        lr=0.03 * batch / 256,
        warmup_epochs=0,
        channels_last=cuda,
    )
    if mode == "model_only":
        model.setup_views(batch, work["image_size"], 2)
        loader = DataLoader(IndexOnly(n_train), batch_size=batch, drop_last=True)
    timer = Timer(args.warmup, steps)
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    t0 = time.perf_counter()
    if dm is None:
        trainer.fit(model, train_dataloaders=loader)
    else:
        trainer.fit(model, datamodule=dm)
    wall = time.perf_counter() - t0
    elapsed = (timer.t1 or 0.0) - (timer.t0 or 0.0)
    ips = batch * timer.steps / elapsed if elapsed > 0 and timer.steps else None
    return {
        "workload": work["name"],
        "mode": mode,
        "precision": precision,
        "batch_size": batch,
        "measured_steps": timer.steps,
        "images_per_s": round(ips, 1) if ips else None,
        "wall_s": round(wall, 2),
        "final_loss": timer.losses[-1] if timer.losses else None,
        "finite": bool(timer.losses) and bool(np.isfinite(timer.losses).all()),
    }


def measured_steps(mode: str, args: argparse.Namespace) -> int:
    """Loader modes measure long enough to drain what the workers prefetched during warm-up
    (``workers x prefetch_factor 2`` batches), so the figure is the steady-state rate."""
    if mode == "model_only" or args.workers == 0:
        return args.steps
    return max(args.steps, 8 * args.workers)


def workloads(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.smoke:
        return [
            dict(
                name="cifar",
                dataset="cifar10",
                backbone="cifar_resnet18",
                width=4,
                image_size=32,
                batch_size=8,
            ),
            dict(
                name="jpeg",
                dataset="imagefolder",
                backbone="resnet50",
                width=4,
                image_size=64,
                batch_size=4,
            ),
        ]
    return [
        dict(
            name="cifar",
            dataset="cifar10",
            backbone="cifar_resnet18",
            width=64,
            image_size=32,
            batch_size=512,
        ),
        dict(
            name="jpeg",
            dataset="imagefolder",
            backbone="resnet50",
            width=64,
            image_size=224,
            batch_size=128,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (tests)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="measured steps per mode")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--precisions", default="32-true,bf16-mixed")
    p.add_argument("--only", default="", help="comma list of workloads (cifar,jpeg)")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="skip the modes left once this many seconds have passed (recorded as skipped)",
    )
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    args.steps = args.steps or (2 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    cpus = os.cpu_count() or 2
    if args.workers is None:
        args.workers = 0 if args.smoke else max(2, min(12, cpus - 2))
    if args.smoke:
        torch.set_num_threads(1)
    out = (
        Path(args.out)
        if args.out
        else (Path(os.environ["OUT"]) / "gpu_throughput.json" if os.environ.get("OUT") else RESULTS)
    )
    precisions = [x for x in args.precisions.split(",") if x]
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "cpus": cpus,
        "workers": args.workers,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "smoke": args.smoke,
        "runs": [],
    }
    try:
        import nvidia.dali  # noqa: F401

        have_dali = args.device == "cuda"
    except ImportError:
        have_dali = False
    failed = 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as tmp:
        for work in workloads(args):
            if args.only and work["name"] not in args.only.split(","):
                continue
            root = Path(tmp) / work["name"]
            n_train = work["batch_size"] * (args.warmup + measured_steps("loader", args))
            t0 = time.perf_counter()
            if work["dataset"] == "cifar10":
                synthetic.write_fake_cifar(root, "cifar10", n_train=n_train, n_test=16)
                modes = ["model_only", "loader", "gpu"]
            else:
                write_jpeg_folder(root, n_train, 8, 10, 1 if args.smoke else min(cpus, 16))
                modes = ["model_only", "loader", "gpu", "torchvision"] + (
                    ["dali"] if have_dali else []
                )
            summary[f"{work['name']}_data_write_s"] = round(time.perf_counter() - t0, 2)
            for precision in precisions:
                for mode in modes:
                    if time.perf_counter() - t_start > args.budget_s:
                        res = {"workload": work["name"], "mode": mode, "precision": precision}
                        summary["runs"].append({**res, "skipped": "time budget (--budget-s)"})
                        continue
                    try:
                        res = run_mode(work, mode, precision, args, root)
                    except Exception as e:  # noqa: BLE001 - record and go on
                        failed += 1
                        res = {
                            "workload": work["name"],
                            "mode": mode,
                            "precision": precision,
                            "error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()[-2000:],
                        }
                    summary["runs"].append(res)
                    print(json.dumps(res), flush=True)
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    summary["ok"] = failed == 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
