"""GPU smoke test for NPID+CLD: precision modes, step time, memory, a 1-device DDP run.

Run on a GPU machine (needs torch + pytorch-lightning only; no hydra/omegaconf/wandb):

    PYTHONPATH=src python3 scripts/gpu_smoke.py            # CUDA, ~30 steps per mode
    PYTHONPATH=src python3 scripts/gpu_smoke.py --device cpu --steps 2 --batch-size 8 --width 4

Prints a JSON summary and writes it to ``$OUT/gpu_smoke.json`` when ``$OUT`` is set. Exits 1 if a
check failed (non-finite loss, CLD loss not fp32, DDP run failed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cld_lightning.methods import NPID
from cld_lightning.models import build_backbone


class RandomViews(Dataset):
    """CIFAR-size random images in memory, two views (no augmentation cost)."""

    def __init__(self, n: int, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        x = self.x[i]
        return [x, x.flip(-1)], 0, i


class Probe(pl.Callback):
    """Step times (after warm-up), CLD loss dtype and finiteness of every loss."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.t0 = warmup, [], 0.0
        self.cld_dtypes: set[str] = set()
        self.nonfinite = 0

    def _sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sync(pl_module)
        self.t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._sync(pl_module)
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self.t0)
        out = pl_module.last_cld_output
        if out is not None:
            self.cld_dtypes.add(str(out.loss.dtype).replace("torch.", ""))
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or not torch.isfinite(loss.detach()).all():
            self.nonfinite += 1


def run_mode(args: argparse.Namespace, precision: str, strategy: str = "auto") -> dict[str, Any]:
    pl.seed_everything(0)
    n = args.batch_size * (args.steps + 1)
    model = NPID(
        build_backbone("cifar_resnet18", width=args.width, in_channels=3),
        n,
        {"num_clusters": min(128, args.batch_size), "temperature": 0.2},
        lr=0.03 * args.batch_size / 128,
        warmup_epochs=0,
        channels_last=args.device == "cuda",
    )
    loader = DataLoader(
        RandomViews(n),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=2 if args.device == "cuda" else 0,
        pin_memory=args.device == "cuda",
    )
    probe = Probe(warmup=min(3, max(0, args.steps - 1)))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        strategy=strategy,
        precision=precision,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[probe],
    )
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    wall = time.perf_counter() - t0
    step = sum(probe.times) / max(1, len(probe.times))
    res: dict[str, Any] = {
        "precision": precision,
        "strategy": strategy,
        "steps": trainer.global_step,
        "step_time_s": round(step, 5),
        "images_per_s": round(args.batch_size / step, 1) if step > 0 else None,
        "wall_s": round(wall, 2),
        "cld_loss_dtypes": sorted(probe.cld_dtypes),
        "nonfinite_losses": probe.nonfinite,
        "final_cld_loss": float(trainer.callback_metrics.get("cld/loss", float("nan"))),
    }
    if args.device == "cuda":
        res["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    res["ok"] = (
        probe.nonfinite == 0
        and res["cld_loss_dtypes"] == ["float32"]
        and trainer.global_step == args.steps
    )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--precisions", default="32-true,bf16-mixed,16-mixed")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "batch_size": args.batch_size,
        "width": args.width,
        "runs": [],
    }
    precisions = [x for x in args.precisions.split(",") if x]
    if args.device == "cpu":  # 16-mixed needs a GPU
        precisions = [x for x in precisions if x != "16-mixed"]
    for precision in precisions:
        try:
            summary["runs"].append(run_mode(args, precision))
        except Exception as err:  # report and go on
            summary["runs"].append(
                {
                    "precision": precision,
                    "ok": False,
                    "error": repr(err),
                    "trace": traceback.format_exc()[-2000:],
                }
            )
    try:  # strategy='ddp' with one device (the single-process DDP code path)
        summary["runs"].append(
            run_mode(args, "bf16-mixed" if args.device == "cuda" else "32-true", strategy="ddp")
        )
    except Exception as err:
        summary["runs"].append(
            {
                "strategy": "ddp",
                "ok": False,
                "error": repr(err),
                "trace": traceback.format_exc()[-2000:],
            }
        )
    summary["ok"] = all(r.get("ok") for r in summary["runs"])
    text = json.dumps(summary, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["OUT"]) / "gpu_smoke.json").write_text(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
