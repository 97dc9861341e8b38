"""Training throughput on one GPU: model-only vs the training loop with each input pipeline.

Workloads (each trained with Lightning, CLD on, bf16-mixed and/or fp32, channels_last on CUDA):

* ``cifar``: CIFAR ResNet-18 width 64, 32 px, batch 512; synthetic uint8 CIFAR-like images in
  memory (CIFAR pickles written to a temp folder, loaded as one tensor); two methods:
  NPID+CLD with 2 views (``npid``) and MoCo+CLD in the reference 3-crop scheme (``moco``:
  crops 1, 2 -> query encoder, crop 3 -> key encoder; ``mocov2_erasing`` augmentation);
* ``jpeg``: ResNet-50 (torchvision layout) at 224 px, batch 128, NPID+CLD 2 views; synthetic
  JPEGs of ImageNet-like sizes (500x375, 375x500, 400x400; noisy content, ~100 KB each) written
  to a temp ImageFolder.

Modes (images/s = source images per second, each seen as 2 or 3 views, measured after warm-up):

* ``model_only``: the same Lightning loop with fixed views already on the device (upper bound);
* ``loader``: ``data.augment_on=loader`` (per-sample CPU augmentation in ``--workers`` workers);
* ``gpu``: ``data.augment_on=gpu`` (uint8 batches, batched augmentation on the GPU; on the JPEG
  folder the workers still decode with PIL and the crops are taken per image);
* ``torchvision`` (jpeg only): ``data.decoder=torchvision data.augment_on=gpu`` (nvJPEG);
* ``dali`` (jpeg only, when ``nvidia.dali`` imports): ``data.decoder=dali``.

Each run records images/s, its ratio to the model-only figure of the same workload, method and
precision (``vs_model_only``), and the peak GPU memory (``peak_mem_gib``, allocated;
``peak_reserved_gib``). When a loop mode runs below ``--profile-below`` x model-only (default 0.9),
one more step of the same run is profiled with ``torch.profiler`` and the top 15 ops are recorded
(``profile``: the ``key_averages`` table sorted by CUDA time, on the CPU by CPU time, and the same
ops as a list).

    PYTHONPATH=src python scripts/gpu_throughput.py                 # one H200: ~5-7 min
    PYTHONPATH=src python scripts/gpu_throughput.py --only cifar --precisions bf16-mixed
    PYTHONPATH=src python scripts/gpu_throughput.py --smoke         # CPU, tiny, ~20 s

Writes ``$OUT/gpu_throughput.json`` when ``$OUT`` is set, else
``benchmarks/results/gpu_throughput.json`` (``--out`` overrides). A mode that fails is recorded
with its error and the script goes on; exit status 1 when any mode failed.
``scripts/gpu_check.py`` (``make gpu-check``) runs it as two of its parts.
"""

from __future__ import annotations

import argparse
import gc
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
from cld_lightning.methods import NPID, MoCo
from cld_lightning.models import build_backbone

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_throughput.json"
JPEG_SIZES = ((375, 500), (500, 375), (400, 400))
MODES = ("model_only", "loader", "gpu", "torchvision", "dali")
TOP_OPS = 15


class FixedViews:
    """Mix-in: training batches are fixed normalised views already on the device."""

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


class ModelOnlyNPID(FixedViews, NPID):
    """NPID whose training batches are fixed normalised views already on the device."""


class ModelOnlyMoCo(FixedViews, MoCo):
    """MoCo whose training batches are fixed normalised views already on the device."""


# method name -> (Lightning class, model-only class, views, augmentation, constructor kwargs)
METHODS: dict[str, dict[str, Any]] = {
    "npid": dict(
        cls=NPID,
        fixed=ModelOnlyNPID,
        views=2,
        augmentation="npid",
        kwargs=dict(temperature=0.1),
        label="NPID+CLD, 2 views",
    ),
    "moco": dict(
        cls=MoCo,
        fixed=ModelOnlyMoCo,
        views=3,
        augmentation="mocov2_erasing",
        kwargs=dict(num_crops=3, queue_size=12288, temperature=0.07, ema_momentum=0.999),
        label="MoCo+CLD, 3 crops (reference recipe)",
    ),
}


class Timer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of step ``total - 1``, synchronised
    only there (a per-step sync or ``loss.item()`` would serialise CPU and GPU work).

    With ``profile_below`` and ``model_only_ips`` set, the run has one more step (``total``):
    when the timed rate is below ``profile_below`` x ``model_only_ips``, that step is profiled
    with ``torch.profiler`` from the end of step ``total - 1`` (so the wait for its batch, the
    host-to-device copy and the augmentation on the device are inside) to its end."""

    def __init__(
        self,
        warmup: int,
        total: int,
        batch_size: int,
        profile_below: float | None = None,
        model_only_ips: float | None = None,
    ) -> None:
        self.warmup, self.total, self.batch_size = warmup, total, batch_size
        self.profile_below, self.model_only_ips = profile_below, model_only_ips
        self.t0: float | None = None
        self.t1: float | None = None
        self.steps = 0
        self.losses: list[float] = []
        self.prof: Any = None
        self.prof_t0 = 0.0
        self.profile: dict[str, Any] | None = None

    @property
    def extra_steps(self) -> int:
        return 1 if self.profile_below and self.model_only_ips else 0

    def _sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def ips(self) -> float | None:
        elapsed = (self.t1 or 0.0) - (self.t0 or 0.0)
        return self.batch_size * self.steps / elapsed if elapsed > 0 and self.steps else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self._sync(pl_module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.warmup <= batch_idx < self.total:
            self.steps += 1
        if batch_idx == self.total - 1:
            self._sync(pl_module)
            self.t1 = time.perf_counter()
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None:
                self.losses.append(float(loss.detach()))
            ips = self.ips()
            if self.extra_steps and ips is not None:
                ratio = ips / self.model_only_ips
                if ratio < self.profile_below:
                    self._start_profile(pl_module, ratio)
        elif batch_idx == self.total and self.prof is not None:
            self._stop_profile(pl_module)

    def _start_profile(self, pl_module: pl.LightningModule, ratio: float) -> None:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU]
        if pl_module.device.type == "cuda":
            acts.append(ProfilerActivity.CUDA)
        self.prof = profile(activities=acts, record_shapes=False)
        self.prof.__enter__()
        self.profile = {
            "reason": f"loop {ratio:.2f}x model-only < {self.profile_below}",
            "ratio": round(ratio, 3),
        }
        self.prof_t0 = time.perf_counter()

    def _stop_profile(self, pl_module: pl.LightningModule) -> None:
        self._sync(pl_module)
        step_ms = (time.perf_counter() - self.prof_t0) * 1000
        self.prof.__exit__(None, None, None)
        assert self.profile is not None
        self.profile.update(profile_summary(self.prof, pl_module.device.type == "cuda"))
        self.profile["profiled_step_ms"] = round(step_ms, 2)
        self.prof = None


def _device_time(evt: Any, self_only: bool = False) -> float:
    name = "self_device_time_total" if self_only else "device_time_total"
    if hasattr(evt, name):
        return float(getattr(evt, name))
    return float(getattr(evt, name.replace("device", "cuda"), 0.0))


def profile_summary(prof: Any, cuda: bool, top: int = TOP_OPS) -> dict[str, Any]:
    """The profiled step's ``key_averages``: the table of the top ``top`` ops by CUDA time (by
    CPU time without CUDA), the same ops as a list, and the top ops by CPU time (where a wait for
    the loader shows: ``enumerate(DataLoader)...``)."""
    avgs = prof.key_averages()
    sort_by = "cuda_time_total" if cuda else "cpu_time_total"

    def key(evt: Any) -> float:
        return _device_time(evt) if cuda else float(evt.cpu_time_total)

    def row(evt: Any) -> dict[str, Any]:
        return {
            "name": evt.key,
            "count": int(evt.count),
            "cpu_total_ms": round(evt.cpu_time_total / 1000, 3),
            "self_cpu_ms": round(evt.self_cpu_time_total / 1000, 3),
            "cuda_total_ms": round(_device_time(evt) / 1000, 3),
            "self_cuda_ms": round(_device_time(evt, self_only=True) / 1000, 3),
        }

    by_main = sorted(avgs, key=key, reverse=True)[:top]
    by_cpu = sorted(avgs, key=lambda e: float(e.cpu_time_total), reverse=True)[:top]
    return {
        "sort_by": sort_by,
        "table": avgs.table(sort_by=sort_by, row_limit=top),
        "top_ops": [row(e) for e in by_main],
        "top_ops_by_cpu_time": [row(e) for e in by_cpu],
    }


class IndexOnly(Dataset):
    """Yields only ``(0, 0, index)``: the model-only module swaps in fixed device views."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return 0, 0, i


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


def mode_pipeline(mode: str, cuda: bool) -> dict[str, str]:
    """``data.augment_on`` / ``data.decoder`` of a mode (model_only: neither)."""
    if mode == "model_only":
        return {"augment_on": "none (fixed views on the device)", "decoder": "none"}
    if mode == "loader":
        return {"augment_on": "loader", "decoder": "pil"}
    on = "gpu" if cuda else "device"
    return {"augment_on": on, "decoder": "pil" if mode == "gpu" else mode}


def run_mode(
    work: dict[str, Any],
    method: str,
    mode: str,
    precision: str,
    args: argparse.Namespace,
    root: Path,
    model_only_ips: float | None = None,
) -> dict[str, Any]:
    pl.seed_everything(0)
    cuda = args.device == "cuda"
    spec = METHODS[method]
    views = spec["views"]
    profile_below = args.profile_below if mode != "model_only" else None
    timer = Timer(
        args.warmup,
        args.warmup + measured_steps(mode, args),
        work["batch_size"],
        profile_below=profile_below or None,
        model_only_ips=model_only_ips,
    )
    steps = timer.total + timer.extra_steps
    batch = work["batch_size"]
    n_train = batch * steps
    pipe = mode_pipeline(mode, cuda)
    dm: SSLDataModule | None = None
    if mode != "model_only":
        dm = SSLDataModule(
            dataset=work["dataset"],
            root=str(root),
            batch_size=batch,
            num_workers=args.workers,
            num_views=views,
            augmentation=spec["augmentation"],
            image_size=work["image_size"],
            pin_memory=cuda,
            persistent_workers=False,  # one epoch; no workers left behind between modes
            download=False,
            max_test_samples=8,
            augment_on=pipe["augment_on"],
            decoder=pipe["decoder"],
        )
        dm.setup("fit")
        n_train = dm.num_train_samples
        if n_train < batch * steps:
            raise RuntimeError(f"{n_train} training images < {steps} steps x batch {batch}")
    backbone = build_backbone(
        work["backbone"], width=work["width"], in_channels=3, channels_last=cuda
    )
    cls = spec["fixed"] if mode == "model_only" else spec["cls"]
    # NPID: bank rows and views; the other methods take no num_samples
    extra = {"num_samples": n_train, "num_views": views} if method == "npid" else {}
    model = cls(
        backbone,
        cld={"num_clusters": min(128, batch // 2), "temperature": 0.2},
        lr=0.03 * batch / 256,
        warmup_epochs=0,
        channels_last=cuda,
        **spec["kwargs"],
        **extra,
    )
    if mode == "model_only":
        model.setup_views(batch, work["image_size"], views)
        loader = DataLoader(IndexOnly(n_train), batch_size=batch, drop_last=True)
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
        benchmark=cuda,
        callbacks=[timer],
    )
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        if dm is None:
            trainer.fit(model, train_dataloaders=loader)
        else:
            trainer.fit(model, datamodule=dm)
    finally:
        if timer.prof is not None:  # a run that broke inside the profiled step
            timer.prof.__exit__(None, None, None)
    wall = time.perf_counter() - t0
    peak = peak_reserved = None
    if cuda:
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        peak_reserved = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    ips = timer.ips()
    ratio = None  # this run's images/s over the model-only figure of its group
    if ips and mode == "model_only":
        ratio = 1.0
    elif ips and model_only_ips:
        ratio = round(ips / model_only_ips, 3)
    res = {
        "workload": work["name"],
        "method": method,
        "views": views,
        "mode": mode,
        **pipe,
        "precision": precision,
        "channels_last": cuda,
        "batch_size": batch,
        "measured_steps": timer.steps,
        "images_per_s": round(ips, 1) if ips else None,
        "vs_model_only": ratio,
        "peak_mem_gib": peak,
        "peak_reserved_gib": peak_reserved,
        "wall_s": round(wall, 2),
        "final_loss": timer.losses[-1] if timer.losses else None,
        "finite": bool(timer.losses) and bool(np.isfinite(timer.losses).all()),
    }
    if timer.profile is not None:
        res["profile"] = timer.profile
    del trainer, model, dm
    return res


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
                methods=["npid", "moco"],
            ),
            dict(
                name="jpeg",
                dataset="imagefolder",
                backbone="resnet50",
                width=4,
                image_size=64,
                batch_size=4,
                methods=["npid"],
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
            methods=["npid", "moco"],
        ),
        dict(
            name="jpeg",
            dataset="imagefolder",
            backbone="resnet50",
            width=64,
            image_size=224,
            batch_size=128,
            methods=["npid"],
        ),
    ]


def _csv(text: str) -> list[str]:
    return [x for x in (text or "").split(",") if x]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (tests)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="measured steps per mode")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--precisions", default="32-true,bf16-mixed")
    p.add_argument("--only", default="", help="comma list of workloads (cifar,jpeg)")
    p.add_argument("--methods", default="", help="comma list of methods (npid,moco); default all")
    p.add_argument(
        "--modes",
        default="",
        help=f"comma list, in the order to run ({','.join(MODES)}); default each workload's",
    )
    p.add_argument(
        "--profile-below",
        type=float,
        default=0.9,
        help="profile one more step of a loop mode below this x model-only (0: never)",
    )
    p.add_argument("--out", default=None)
    p.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="skip the modes left once this many seconds have passed (recorded as skipped)",
    )
    args = p.parse_args(argv)
    bad = [m for m in _csv(args.modes) if m not in MODES] + [
        m for m in _csv(args.methods) if m not in METHODS
    ]
    if bad:
        p.error(f"unknown mode/method {bad}; modes {list(MODES)}, methods {list(METHODS)}")
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
    precisions = _csv(args.precisions)
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "cpus": cpus,
        "workers": args.workers,
        "warmup_steps": args.warmup,
        "measured_steps": args.steps,
        "channels_last": args.device == "cuda",
        "profile_below": args.profile_below,
        "smoke": args.smoke,
        "runs": [],
    }
    try:
        import nvidia.dali  # noqa: F401

        have_dali = args.device == "cuda"
    except ImportError:
        have_dali = False
    summary["dali"] = "measured" if have_dali else "not measured: nvidia.dali is not importable"
    failed = 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as tmp:
        for work in workloads(args):
            if args.only and work["name"] not in _csv(args.only):
                continue
            methods = [m for m in work["methods"] if not args.methods or m in _csv(args.methods)]
            if not methods:
                continue
            if work["dataset"] == "cifar10":
                modes = ["model_only", "loader", "gpu"]
            else:
                modes = ["model_only", "loader", "gpu", "torchvision"] + (
                    ["dali"] if have_dali else []
                )
            if args.modes:
                modes = [m for m in _csv(args.modes) if m in modes]
            root = Path(tmp) / work["name"]
            # the longest run: warm-up, the loader modes' measured steps, one profiled step
            n_train = work["batch_size"] * (args.warmup + measured_steps("loader", args) + 1)
            t0 = time.perf_counter()
            if work["dataset"] == "cifar10":
                synthetic.write_fake_cifar(root, "cifar10", n_train=n_train, n_test=16)
            else:
                write_jpeg_folder(root, n_train, 8, 10, 1 if args.smoke else min(cpus, 16))
            summary[f"{work['name']}_data_write_s"] = round(time.perf_counter() - t0, 2)
            for method in methods:
                for precision in precisions:
                    model_only_ips: float | None = None
                    for mode in modes:
                        base = {
                            "workload": work["name"],
                            "method": method,
                            "mode": mode,
                            **mode_pipeline(mode, args.device == "cuda"),
                            "precision": precision,
                        }
                        if time.perf_counter() - t_start > args.budget_s:
                            res = {**base, "skipped": "time budget (--budget-s)"}
                            summary["runs"].append(res)
                            print(json.dumps(res), flush=True)
                            continue
                        try:
                            res = run_mode(
                                work, method, mode, precision, args, root, model_only_ips
                            )
                            if mode == "model_only":
                                model_only_ips = res["images_per_s"]
                        except Exception as e:  # noqa: BLE001 - record and go on
                            failed += 1
                            res = {
                                **base,
                                "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()[-2000:],
                            }
                        summary["runs"].append(res)
                        printed = {
                            k: v for k, v in res.items() if k not in ("profile", "traceback")
                        }
                        print(json.dumps(printed), flush=True)
                        if "profile" in res:
                            print(res["profile"]["table"], flush=True)
    summary["total_s"] = round(time.perf_counter() - t_start, 1)
    summary["ok"] = failed == 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
