"""Input-pipeline throughput vs model-step throughput on 32x32 CIFAR-like data.

Measures, for each multi-view recipe (npid 2 views, mocov2 3, byol 2, infomin 2) and
num_workers in {0, 2}: source images/s out of the DataLoader (batch 256, persistent workers,
in-memory uint8 tensors, generated, no download). Then the training-step throughput (forward +
backward + SGD step over all views) of a CIFAR ResNet-18 at width 16, and, for each recipe, an
end-to-end loop (2 workers feeding the model step) to see whether the data slows training down
when workers and model share the CPU cores. The same recipes batched on the model's device
(``data.augment_on=device``: uint8 batches, :class:`BatchMultiViewAugment`, no workers): views/s
of the augmentation alone and of the loop it feeds. Writes benchmarks/results/data_throughput.json.

    python benchmarks/data_throughput.py [--quick] [--device cuda] [--workers 0 2] [--label L]

Each run is stored under ``runs[label]`` of the JSON (other labels are kept), e.g.
``taskset -c 0,1 python benchmarks/data_throughput.py --threads 2 --label cpu_2cores``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from cld_lightning.data import MultiViewDataset, TensorImages, build_multiview_transform
from cld_lightning.data.batch_augment import BatchMultiViewAugment
from cld_lightning.data.synthetic import fake_images
from cld_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD

PIPELINES = [("npid", 2), ("mocov2", 3), ("byol", 2), ("infomin", 2)]
OUT = Path(__file__).resolve().parent / "results" / "data_throughput.json"


def build_model(in_channels: int = 3) -> tuple[nn.Module, str]:
    """The project's CIFAR ResNet-18 at width 16 (+ a 128-d linear head)."""
    try:
        from cld_lightning.models import build_backbone

        backbone = build_backbone("cifar_resnet18", width=16, in_channels=in_channels)
        name = "cld_lightning.models cifar_resnet18 width 16"
    except ImportError:  # fallback while the models package is missing
        from torchvision.models.resnet import BasicBlock, ResNet

        net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=128, width_per_group=16)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        net.feature_dim = 512
        backbone, name = net, "local torchvision ResNet-18 (CIFAR stem)"
    return nn.Sequential(backbone, nn.Linear(backbone.feature_dim, 128)), name


def make_loader(aug: str, views: int, workers: int, batch: int, n: int) -> DataLoader:
    x, y = fake_images(n, 10, 32, 3, seed=0)
    src = TensorImages(torch.from_numpy(x).permute(0, 3, 1, 2), y)
    t = build_multiview_transform(aug, views, 32, 3, CIFAR_MEAN, CIFAR_STD)
    return DataLoader(
        MultiViewDataset(src, t),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def loader_throughput(loader: DataLoader, batches: int) -> float:
    """Source images/s over ``batches`` batches after one warm-up batch (worker start-up)."""
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    seen = 0
    for _ in range(batches):
        try:
            seen += len(next(it)[1])
        except StopIteration:
            it = iter(loader)
            seen += len(next(it)[1])
    return seen / (time.perf_counter() - t0)


def _step(model: nn.Module, opt: torch.optim.Optimizer, views: list[torch.Tensor]) -> None:
    z = model(torch.cat(views))
    loss = z.pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_throughput(views: int, batch: int, steps: int, device: torch.device) -> float:
    """Source images/s of forward+backward+step over ``views`` views of a batch."""
    model, _ = build_model()
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = [torch.randn(batch, 3, 32, 32, device=device) for _ in range(views)]
    for _ in range(2):
        _step(model, opt, x)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(model, opt, x)
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def end_to_end(loader: DataLoader, steps: int, device: torch.device) -> float:
    """Source images/s of a training loop fed by ``loader``."""
    model, _ = build_model()
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    it = iter(loader)
    views, _, _ = next(it)
    _step(model, opt, [v.to(device, non_blocking=True) for v in views])
    _sync(device)
    t0 = time.perf_counter()
    seen = 0
    for _ in range(steps):
        try:
            views, target, _ = next(it)
        except StopIteration:
            it = iter(loader)
            views, target, _ = next(it)
        _step(model, opt, [v.to(device, non_blocking=True) for v in views])
        seen += len(target)
    _sync(device)
    return seen / (time.perf_counter() - t0)


def uint8_images(n: int) -> torch.Tensor:
    """The generated images as one ``uint8 [n, 3, 32, 32]`` tensor (what the loader yields with
    ``augment_on=device``)."""
    x, _ = fake_images(n, 10, 32, 3, seed=0)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def device_views(
    augment: BatchMultiViewAugment, images: torch.Tensor, step: int, device: torch.device
) -> list[torch.Tensor]:
    """One batch's views made on ``device`` by the batched recipe (a generator seeded per batch,
    as the datamodule does)."""
    return augment(images.to(device, non_blocking=True), torch.Generator().manual_seed(step))


def device_aug_throughput(
    aug: str, views: int, images: torch.Tensor, batch: int, batches: int, device: torch.device
) -> float:
    """Source images/s of the batched augmentation alone (after one warm-up batch)."""
    augment = BatchMultiViewAugment(aug, views, 32, 3, CIFAR_MEAN, CIFAR_STD)
    device_views(augment, images[:batch], 0, device)
    _sync(device)
    t0 = time.perf_counter()
    for b in range(batches):
        device_views(augment, images[b * batch : (b + 1) * batch], b, device)
    _sync(device)
    return batch * batches / (time.perf_counter() - t0)


def end_to_end_device_aug(
    aug: str, views: int, images: torch.Tensor, batch: int, steps: int, device: torch.device
) -> float:
    """Source images/s of a training loop whose views are made on ``device`` per batch."""
    model, _ = build_model()
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    augment = BatchMultiViewAugment(aug, views, 32, 3, CIFAR_MEAN, CIFAR_STD)
    _step(model, opt, device_views(augment, images[:batch], 0, device))
    _sync(device)
    t0 = time.perf_counter()
    for s in range(steps):
        chunk = images[(s % 2) * batch : (s % 2 + 1) * batch]
        _step(model, opt, device_views(augment, chunk, s + 1, device))
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer batches (smoke run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    p.add_argument("--label", default=None, help="run name; runs with other labels are kept")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = args.batch_size
    data_batches = 2 if args.quick else 8
    model_steps = 1 if args.quick else 3
    if device.type == "cuda":
        model_steps *= 20
    n = batch * (data_batches + 2)

    _, model_name = build_model()
    results: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": str(device)
            + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        },
        "model": model_name,
        "image": "32x32x3 uint8 in memory (generated, CIFAR-like)",
        "batch_size": batch,
        "units": "source images per second (each image yields num_views views)",
        "pipelines": [],
    }
    for aug, views in PIPELINES:
        row: dict = {"augmentation": aug, "num_views": views}
        for w in args.workers:
            loader = make_loader(aug, views, w, batch, n)
            row[f"data_img_s_workers{w}"] = round(loader_throughput(loader, data_batches), 1)
            del loader
        row["model_step_img_s"] = round(model_throughput(views, batch, model_steps, device), 1)
        for w in [w for w in args.workers if w > 0]:
            loader = make_loader(aug, views, w, batch, n)
            row[f"end_to_end_img_s_workers{w}"] = round(end_to_end(loader, model_steps, device), 1)
            del loader
        images = uint8_images(batch * data_batches)
        row["device_aug_img_s"] = round(
            device_aug_throughput(aug, views, images, batch, data_batches, device), 1
        )
        row["end_to_end_img_s_device_aug"] = round(
            end_to_end_device_aug(aug, views, images, batch, model_steps, device), 1
        )
        best_data = max(row[f"data_img_s_workers{w}"] for w in args.workers)
        row["data_over_model"] = round(best_data / row["model_step_img_s"], 2)
        row["data_is_bottleneck"] = best_data < row["model_step_img_s"]
        results["pipelines"].append(row)
        print(json.dumps(row), flush=True)
    label = args.label or ("cpu" if device.type == "cpu" else "gpu")
    runs = {}
    if args.out.is_file():
        try:
            runs = json.loads(args.out.read_text()).get("runs", {})
        except (json.JSONDecodeError, AttributeError):
            runs = {}
    runs[label] = results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
