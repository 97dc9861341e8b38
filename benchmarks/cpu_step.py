"""CPU step time and peak RSS: the CIFAR NPID+CLD recipe against the reference code and a floor.

Issue 13, item 3: the CIFAR recipe's default step should reach >= 1.3x the reference code's step
rate with <= 0.75x its peak memory, at the same settings (NPID+CLD, CIFAR ResNet-18, 2 views x 256
images, k 128, bank of 50000 rows, SGD lr 0.06 m 0.9 wd 7e-4).

Configurations (``CONFIGS``), each run in its **own fresh subprocess** per round, so that the
peak RSS (``VmHWM``, see :func:`peak_rss_mb` for why not ``ru_maxrss``) is that configuration's own:

- ``reference``: the authors' step (``frank-xwang/CLD-UnsupervisedLearning``,
  ``train_cifar_npid_cld.py``, the ``train()`` loop body with the CIFAR-10 NPID+CLD script's flags:
  ``--two-imgs --nce-k 0 --nce-t 0.1 --cld_t 0.2 --use-kmeans --clusters 128 --num_iters 5
  --Lambda 1.0``): ``models/resnet_cifar.py`` ``ResNet18(low_dim=128)`` with its two heads,
  ``lib/LinearAverage.py`` (full-softmax memory bank, updated inside its backward),
  ``spectral_clustering.KMeans`` and the loss, group-accuracy and NaN check as written there;
  ``loss.backward()`` then ``optimizer.step()``. The files are extracted from the mirrored
  repository (``git show HEAD:<file>`` into a temporary directory) and imported at run time;
  without the mirror the configuration is skipped and the JSON says why. Adapted to run here:

  * ``spectral_clustering.py``: the two ``.cuda()`` calls in ``KMeans`` (``torch.ones([K])
    .long().cuda()``, ``torch.zeros([K, D]).cuda()``) are removed (CPU tensors); its unused
    ``matplotlib.pyplot`` import gets an empty stub module (no plotting library in the RSS).
  * no ``apex`` AMP (``--amp --opt-level O1`` is CUDA fp16; the step runs fp32), no
    ``DistributedDataParallel`` / process group (one CPU process), no LR ``scheduler.step()``
    (our timed step has none either), no ``AverageMeter`` / printing; the two ``.item()`` calls
    the loop makes for its meters are kept. ``torch.set_num_threads(1)`` at the top of
    ``train()`` is not copied (every configuration runs with the same threads, ``--threads``).
  * ``lib/LinearAverage.py``: ``LinearAverageOp`` holds the memory bank as a ctx attribute
    instead of ``save_for_backward`` (see :func:`_patch_saved_memory`): unmodified, torch 2.x
    raises at the second view's backward, because the first view's backward has already updated
    the bank in place (version-counter check). Same storage, same arithmetic.
  * ``ResNet18(low_dim=128)`` is built with its default ``pool_len=4`` (the script passes
    ``args.pool_len``, an argument its parser never defines).
  * initial weights and memory bank: copied from this project's model built with the same seed
    (a name mapping, see :func:`reference_state`), so that the step-0 losses of ``reference`` and
    ``ours_fp32_nchw`` can be compared (they agree to ~1e-6 relative); the timed computation is
    unchanged.
  * ``--width`` other than 64 (``--quick`` only): the stage widths 64/128/256/512 of
    ``ResNet.__init__`` are replaced by ``w, 2w, 4w, 8w`` (exact string substitutions, each
    asserted); at width 64 the file is used unchanged.

- ``ours_fp32_nchw`` / ``ours_fp32_channels_last``: this project's model composed from the recipe
  (``experiment=cifar10_npid_cld``, Hydra compose API, ``cld_lightning.app.build.build_model``) with
  ``method.channels_last`` off / on, fp32. The step is what ``SSLMethod.training_step`` +
  ``optimizer_step`` do inside a Trainer, without the Trainer's logging: ``compute_loss``, the
  finite-loss check (``_all_finite``), backward, SGD step, ``update_state`` (bank update).
- ``ours_bf16_channels_last``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  around ``compute_loss`` only, as Lightning's ``bf16-mixed`` precision plugin does (backward,
  optimiser and bank update outside autocast). NPID logits, k-means and the CLD loss run in fp32
  inside (autocast disabled, inputs upcast); ``bf16_dtype_probe`` in the JSON records the dtypes
  at tiny size, and the tests ``tests/test_reference_fidelity.py::
  test_npid_logits_are_fp32_under_bf16_autocast``, ``tests/cld/test_kmeans.py::
  test_bf16_input_runs_in_fp32`` and ``tests/distributed/test_precision_configs.py::
  test_cld_loss_is_fp32_under_bf16_autocast`` guarantee it.
- ``ours_bf16_channels_last_compile`` and ``ours_fp32_channels_last_compile``: plus
  ``method.compile_backbone=true`` (``torch.compile`` of the backbone, inductor; at least 2
  warm-up steps); the compile time is in ``warmup_times_s``. Not in ``--quick``.
- ``backbone_floor`` (fp32 NCHW), ``backbone_floor_channels_last`` (fp32) and
  ``backbone_floor_bf16_channels_last``: this project's CIFAR ResNet-18 alone, each view forwarded
  separately (as both methods do, BatchNorm per view), loss = mean of the two pooled features'
  means, backward, SGD step; no heads, no bank, no k-means. These import only torch (no
  Lightning), so their absolute RSS lacks the ~100-200 MiB of Lightning/Hydra imports that
  ``ours_*`` carry (the reference imports torch only, too); ``step_peak_rss_mb`` (peak minus the RSS right before the first step)
  compares the steps alone.

Timing: rounds interleaved (round ``r`` runs every configuration once, order rotated by ``r``), so
that background load on a shared machine hits all alike; in each child ``--warmup`` untimed steps
then ``--steps`` timed ones on the same batch (seeded random images, seeded bank indices);
``step_time_s`` = median over all timed steps of all rounds. ``peak_rss_mb`` = max over rounds.
``ratios``: ``speedup_vs_reference`` = reference s/step / config s/step; ``rss_vs_reference`` =
config peak RSS / reference peak RSS (``step_rss_vs_reference`` with step peaks); ``over_floor``
= config s/step / the matching floor's.

    python benchmarks/cpu_step.py                      # the issue's settings, ~15-20 min on 2 cores
    python benchmarks/cpu_step.py --quick --out /tmp/q.json   # batch 16, width 8, k 8, 1 round
    python benchmarks/cpu_step.py --configs reference,ours_fp32_channels_last --rounds 3
    python benchmarks/cpu_step.py --cpu-class avx2_emulated   # as an AVX2-only CPU runs

CPU classes (``--cpu-class``, ``cld_lightning.app.device_choice.CPU_CLASSES``): ``native`` (the
machine as it is; ``benchmarks/results/cpu_step.json``) and ``avx2_emulated`` (the script re-runs
itself with ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, children inherit it;
``cpu_step_avx2_emulated.json``). ``recipe_default`` resolves the recipe's ``auto`` precision and
layout for the class (``auto_choice``, with reasons) and names the configuration it is.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import machine_info, rss_mb  # noqa: E402

from cld_lightning.app.device_choice import CPU_CLASSES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cpu_step.json"
MIRROR = Path(
    os.environ.get(
        "CLD_REFERENCE_MIRROR", "/work/.mirror/frank-xwang+CLD-UnsupervisedLearning/repo"
    )
)
REFERENCE_FILES = (
    "lib/__init__.py",
    "lib/normalize.py",
    "lib/LinearAverage.py",
    "models/__init__.py",
    "models/resnet_cifar.py",
    "spectral_clustering.py",
)
RECIPE = "cifar10_npid_cld"

# name -> (kind, channels_last, bf16 autocast, torch.compile of the backbone)
CONFIGS: dict[str, tuple[str, bool, bool, bool]] = {
    "reference": ("reference", False, False, False),
    "ours_fp32_nchw": ("ours", False, False, False),
    "ours_fp32_channels_last": ("ours", True, False, False),
    "ours_bf16_channels_last": ("ours", True, True, False),
    "ours_bf16_channels_last_compile": ("ours", True, True, True),
    "ours_fp32_channels_last_compile": ("ours", True, False, True),
    "backbone_floor": ("floor", False, False, False),
    "backbone_floor_channels_last": ("floor", True, False, False),
    "backbone_floor_bf16_channels_last": ("floor", True, True, False),
}
QUICK_SKIP = (
    "ours_bf16_channels_last_compile",
    "ours_fp32_channels_last_compile",
    "backbone_floor_channels_last",
)
FLOOR_OF = {
    "reference": "backbone_floor",
    "ours_fp32_nchw": "backbone_floor",
    "ours_fp32_channels_last": "backbone_floor_channels_last",
    "ours_bf16_channels_last": "backbone_floor_bf16_channels_last",
    "ours_bf16_channels_last_compile": "backbone_floor_bf16_channels_last",
    "ours_fp32_channels_last_compile": "backbone_floor_channels_last",
}
TARGET_SPEEDUP, TARGET_RSS = 1.3, 0.75


# --------------------------------------------------------------------------- shared pieces
def make_batch(args: argparse.Namespace) -> tuple[list[Any], Any, Any]:
    """The same seeded batch in every configuration: views, targets, bank indices."""
    import torch

    g = torch.Generator().manual_seed(0)
    b = args.batch
    views = [torch.randn(b, 3, 32, 32, generator=g) for _ in range(args.views)]
    return views, torch.zeros(b, dtype=torch.long), torch.randperm(args.bank_size, generator=g)[:b]


def recipe_cfg(args: argparse.Namespace, channels_last: bool, compile_backbone: bool) -> Any:
    """``train.yaml`` + ``experiment=cifar10_npid_cld`` at the benchmark's size."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cld_lightning.app.config_check import register_schemas
    from cld_lightning.app.train import CONFIG_DIR

    register_schemas()

    GlobalHydra.instance().clear()
    overrides = [
        f"experiment={RECIPE}",
        f"backbone.width={args.width}",
        f"cld.num_clusters={args.k}",
        f"data.batch_size={args.batch}",
        f"data.num_views={args.views}",
        f"method.num_views={args.views}",
    ]
    if channels_last is not None:
        overrides.append(f"method.channels_last={str(channels_last).lower()}")
    if compile_backbone:
        overrides.append("++method.compile_backbone=true")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def build_ours(args: argparse.Namespace, channels_last: bool, compile_backbone: bool) -> Any:
    """(model, composed config) seeded with ``torch.manual_seed(0)``."""
    import torch

    from cld_lightning.app.build import build_model

    cfg = recipe_cfg(args, channels_last, compile_backbone)
    meta = {"in_channels": 3, "num_train_samples": args.bank_size, "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(cfg.method, cfg.backbone, cfg.cld, {**meta, "image_size": 32})
    return model.train(), cfg


def recipe_default(args: argparse.Namespace) -> dict[str, Any]:
    """What the recipe configures (``auto`` resolved for this CPU class, as cld-train does):
    channels_last, trainer precision, compile -> config name."""
    from cld_lightning.app.build import build_layout_backbone
    from cld_lightning.app.device_choice import choose_precision, probe_device

    cfg = recipe_cfg(args, None, False)  # type: ignore[arg-type]
    facts = probe_device("cpu")
    layout = build_layout_backbone(cfg.method, cfg.backbone, 3, facts)[1]
    chosen = choose_precision(cfg.trainer.precision, facts)
    cl = bool(layout.value)
    precision = str(chosen.value)
    comp = bool(cfg.method.get("compile_backbone", False))
    bf16 = precision.startswith("bf16")
    name = next(
        (n for n, c in CONFIGS.items() if c[0] == "ours" and c[1:] == (cl, bf16, comp)), None
    )
    return {
        "experiment": RECIPE,
        "method.channels_last": cl,
        "trainer.precision": precision,
        "method.compile_backbone": comp,
        "config": name,
        "auto_choice": {"precision": chosen.as_dict(), "channels_last": layout.as_dict()},
        "facts": facts.as_dict(),
    }


def reference_state(ours_state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Our recipe model's initial state under the reference's names: backbone ``X`` -> ``X``,
    ``instance_head`` -> ``linear``, ``group_head`` -> ``groupDis.0``, ``memory.bank`` -> the
    ``LinearAverage`` buffer ``memory``."""
    net, lem = {}, {}
    for key, value in ours_state.items():
        if key.startswith("backbone."):
            net[key[len("backbone.") :]] = value
        elif key.startswith("instance_head."):
            net["linear." + key.split(".", 1)[1]] = value
        elif key.startswith("group_head."):
            net["groupDis.0." + key.split(".", 1)[1]] = value
        elif key == "memory.bank":
            lem["memory"] = value
    return {"net": net, "lemniscate": lem}


# --------------------------------------------------------------------------- reference
def _patch_width(src: str, width: int) -> str:
    """Scale the reference ResNet's stage widths 64/128/256/512 to w/2w/4w/8w (quick mode)."""
    subs = [
        ("self.in_planes = 64", f"self.in_planes = {width}"),
        ("nn.Conv2d(3, 64, kernel_size=3", f"nn.Conv2d(3, {width}, kernel_size=3"),
        ("self.bn1 = nn.BatchNorm2d(64)", f"self.bn1 = nn.BatchNorm2d({width})"),
        ("_make_layer(block, 64,", f"_make_layer(block, {width},"),
        ("_make_layer(block, 128,", f"_make_layer(block, {2 * width},"),
        ("_make_layer(block, 256,", f"_make_layer(block, {4 * width},"),
        ("_make_layer(block, 512,", f"_make_layer(block, {8 * width},"),
        ("512*block.expansion", f"{8 * width}*block.expansion"),
    ]
    for old, new in subs:
        if old not in src:
            raise RuntimeError(f"reference resnet_cifar.py changed: {old!r} not found")
        src = src.replace(old, new)
    return src


def _patch_saved_memory(src: str) -> str:
    """``LinearAverageOp`` keeps the bank as a ctx attribute instead of a saved tensor.

    The reference updates the bank in place inside ``backward``; with two views the second
    view's backward then unpacks a saved tensor whose version changed, which current PyTorch
    rejects ("modified by an inplace operation"). Held as a plain attribute, it is the same
    storage without the version check: each backward reads the live bank (the second view's
    gradient sees the first view's update), which is what the code computes when unchecked."""
    subs = [
        (
            "self.save_for_backward(x, memory, y, params)",
            "self.save_for_backward(x, y, params)\n        self.memory = memory",
        ),
        (
            "x, memory, y, params = self.saved_tensors",
            "x, y, params = self.saved_tensors\n        memory = self.memory",
        ),
    ]
    for old, new in subs:
        if src.count(old) != 1:
            raise RuntimeError(f"reference LinearAverage.py changed: {old!r} not found once")
        src = src.replace(old, new)
    return src


def extract_reference(dest: Path, width: int) -> str:
    """Write the reference files (adapted, see the module docstring) under ``dest``; return the
    mirror's commit."""
    commit = subprocess.run(
        ["git", "-C", str(MIRROR), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for path in REFERENCE_FILES:
        src = subprocess.run(
            ["git", "-C", str(MIRROR), "show", f"HEAD:{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if path == "spectral_clustering.py":
            head, sep, tail = src.partition("def spectral_clustering(")
            if head.count(".cuda()") != 2:
                raise RuntimeError("reference KMeans changed: expected 2 .cuda() calls")
            src = head.replace(".cuda()", "") + sep + tail  # KMeans only; the rest is unused
        if path == "lib/LinearAverage.py":
            src = _patch_saved_memory(src)
        if path == "models/resnet_cifar.py" and width != 64:
            src = _patch_width(src, width)
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(src)
    return commit


def reference_step_fn(args: argparse.Namespace, tmp: Path) -> tuple[Any, dict[str, Any]]:
    """Build the reference model/memory/optimiser; return (step function, info)."""
    import torch
    import torch.nn as nn
    import torch.optim as optim

    commit = extract_reference(tmp, args.width)
    plt = types.ModuleType("matplotlib.pyplot")  # imported but unused by KMeans
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = plt  # type: ignore[attr-defined]
    sys.modules.setdefault("matplotlib", mpl)
    sys.modules.setdefault("matplotlib.pyplot", plt)
    sys.path.insert(0, str(tmp))
    import models  # type: ignore[import-not-found]
    from lib.LinearAverage import LinearAverage  # type: ignore[import-not-found]
    from spectral_clustering import KMeans  # type: ignore[import-not-found]

    # the script's flags (scripts/cifar/train_cifar10_npid_cld.sh); lr = 0.03 * bs / 128
    low_dim, nce_t, nce_m, cld_t, lam, iters = 128, 0.1, 0.5, 0.2, 1.0, 5
    clusters = args.k
    lr = 0.03 * 256 / 128
    net = models.__dict__["ResNet18"](low_dim=low_dim)
    lemniscate = LinearAverage(low_dim, args.bank_size, nce_t, nce_m)
    state = torch.load(args.init_state, weights_only=True)
    net.load_state_dict(state["net"], strict=True)
    lemniscate.memory.copy_(state["lemniscate"]["memory"])
    del state
    gc.collect()
    optimizer = optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=7e-4)
    criterion = nn.CrossEntropyLoss()
    criterion_cld = nn.CrossEntropyLoss()
    net.train()

    def step(batch: Any) -> dict[str, float]:
        # train_cifar_npid_cld.py, train(): the loop body (two_imgs, use_kmeans, fp32)
        (inputs1, inputs2), _targets, indexes = batch
        optimizer.zero_grad()
        features_insDis1, features_batchDis1 = net(inputs1, two_branch=True)
        outputs1 = lemniscate(features_insDis1, indexes)
        insDis_loss = criterion(outputs1, indexes)
        features_insDis2, features_batchDis2 = net(inputs2, two_branch=True)
        outputs2 = lemniscate(features_insDis2, indexes)
        loss_nce_2 = criterion(outputs2, indexes)
        insDis_loss = (insDis_loss + loss_nce_2) / 2
        cluster_label1, centroids1 = KMeans(features_batchDis1, K=clusters, Niters=iters)
        cluster_label2, centroids2 = KMeans(features_batchDis2, K=clusters, Niters=iters)
        affnity1 = torch.mm(features_batchDis1, centroids2.t())
        CLD_loss = criterion_cld(affnity1.div_(cld_t), cluster_label2)
        affnity2 = torch.mm(features_batchDis2, centroids1.t())
        CLD_loss = (CLD_loss + criterion_cld(affnity2.div_(cld_t), cluster_label1)) / 2
        _, cluster_pred = torch.topk(affnity1, 1)
        cluster_pred = cluster_pred.t()
        correct = cluster_pred.eq(cluster_label2.view(1, -1).expand_as(cluster_pred))
        correct_all = correct[0].view(-1).float().sum(0).mul_(100.0 / inputs1.size(0))
        correct_all.item()
        loss = insDis_loss + lam * CLD_loss
        if torch.isnan(loss):
            raise RuntimeError("reference loss is NaN")
        loss.backward()  # LinearAverageOp.backward also updates the memory bank
        optimizer.step()
        return {
            "loss": loss.item(),
            "instance_loss": float(insDis_loss),
            "cld_loss": float(CLD_loss),
        }

    return step, {"reference_commit": commit, "reference_files": list(REFERENCE_FILES)}


# --------------------------------------------------------------------------- ours / floor
def ours_step_fn(args: argparse.Namespace, name: str) -> tuple[Any, dict[str, Any]]:
    import torch

    _, channels_last, bf16, comp = CONFIGS[name]
    model, cfg = build_ours(args, channels_last, comp)
    m = cfg.method
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=m.lr, momentum=m.momentum, weight_decay=m.weight_decay)
    info: dict[str, Any] = {"optimizer": {"lr": m.lr, "momentum": m.momentum, "wd": m.weight_decay}}

    def step(batch: Any) -> dict[str, float]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            losses, pending = model.compute_loss(batch, 0)
        loss = losses["loss"]
        if not model._all_finite(loss):  # training_step's check (one host sync)
            raise RuntimeError(f"{name}: loss is not finite")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_state(pending)
        out = {k: float(v) for k, v in losses.items()}
        cld = model.last_cld_output
        out["cld_loss"] = float(cld.loss)  # unweighted L_CLD, as the reference's CLD_loss
        if "dtypes" not in info:
            info["dtypes"] = {
                "loss": str(loss.dtype),
                "cld_loss": str(cld.loss.dtype),
                "centroids": str(cld.centroids[0].dtype),
            }
        return out

    return step, info


def floor_step_fn(args: argparse.Namespace, name: str) -> tuple[Any, dict[str, Any]]:
    import torch

    from cld_lightning.models.resnet import build_backbone

    _, channels_last, bf16, _ = CONFIGS[name]
    torch.manual_seed(0)
    net = build_backbone("cifar_resnet18", width=args.width, channels_last=channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.06, momentum=0.9, weight_decay=7e-4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step(batch: Any) -> dict[str, float]:
        views = batch[0]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feats = [net(v.contiguous(memory_format=fmt)) for v in views]
            loss = torch.stack([f.float().mean() for f in feats]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss)}

    return step, {}


def peak_rss_mb() -> float:
    """This process's peak RSS, MiB: ``VmHWM`` of ``/proc/self/status`` (Linux).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the exec'ing process's high-water mark
    over ``execve`` (``setmax_mm_hiwater_rss`` in ``exec_mmap``), and Python's ``subprocess``
    forks/vforks from this parent, so a child's ``ru_maxrss`` is at least the parent's RSS (here
    ~1 GiB: torch, Lightning, the init state). ``VmHWM`` belongs to the child's own address
    space. Both are recorded (``ru_maxrss_mb``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this fresh process: build, warm-up, timed steps, peak RSS."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.child
    kind = CONFIGS[name][0]
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "reference":
            step, info = reference_step_fn(args, Path(tmp))
        elif kind == "ours":
            step, info = ours_step_fn(args, name)
        else:
            step, info = floor_step_fn(args, name)
        batch = make_batch(args)  # NCHW; channels_last configs convert per step (prepare_input)
        gc.collect()
        rss_before = rss_mb()
        warm, times, losses = [], [], []
        warmup = max(args.warmup, 2) if CONFIGS[name][3] else args.warmup  # compile: 2 at least
        for i in range(warmup + args.steps):
            t0 = time.perf_counter()
            out = step(batch)
            dt = time.perf_counter() - t0
            (warm if i < warmup else times).append(dt)
            losses.append(out)
    peak = peak_rss_mb()
    return {
        "step_times_s": times,
        "warmup_times_s": warm,
        "loss0": losses[0],
        "losses": [o["loss"] for o in losses],
        "peak_rss_mb": peak,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_step_mb": rss_before,
        "step_peak_rss_mb": peak - rss_before,
        "threads": torch.get_num_threads(),
        **info,
    }


# --------------------------------------------------------------------------- parent
def dtype_probe() -> dict[str, Any]:
    """Tiny NPID+CLD under bf16 autocast (no timing): which tensors stay fp32."""
    import torch

    from cld_lightning.losses.npid import npid_logits

    args = argparse.Namespace(width=4, k=4, batch=8, views=2, bank_size=32)
    model, _ = build_ours(args, True, False)
    views, _, index = make_batch(args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model.features(views[0])
        z = model.instance_embedding(feats)
        logits = npid_logits(z, model.memory.bank, 0.1)
        losses, _ = model.compute_loss((views, torch.zeros(8, dtype=torch.long), index), 0)
    out = model.last_cld_output
    return {
        "backbone_features": str(feats.dtype),
        "instance_embedding_z": str(z.dtype),
        "npid_logits": str(logits.dtype),
        "instance_loss": str(losses["instance_loss"].dtype),
        "kmeans_centroids": str(out.centroids[0].dtype),
        "cld_loss": str(out.loss.dtype),
        "tests": [
            "tests/test_reference_fidelity.py::test_npid_logits_are_fp32_under_bf16_autocast",
            "tests/test_reference_fidelity.py::test_npid_module_loss_under_autocast_matches_fp32",
            "tests/cld/test_kmeans.py::test_bf16_input_runs_in_fp32",
            "tests/distributed/test_precision_configs.py::test_cld_loss_is_fp32_under_bf16_autocast",
        ],
    }


def child_cmd(args: argparse.Namespace, name: str, init_state: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    for key in ("batch", "views", "k", "width", "bank_size", "warmup", "steps", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return cmd + ["--init-state", str(init_state)]


def run_one(args: argparse.Namespace, name: str, init_state: Path) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            child_cmd(args, name, init_state),
            capture_output=True,
            text=True,
            check=False,
            timeout=args.child_timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.child_timeout} s"}
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def summarise(
    runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    results: dict[str, Any] = {}
    for name, rounds in runs.items():
        ok = [r for r in rounds if "error" not in r]
        if not ok:
            results[name] = {"skipped": rounds[-1].get("error", "not run") if rounds else "not run"}
            continue
        times = [t for r in ok for t in r["step_times_s"]]
        med = statistics.median(times)
        results[name] = {
            "description": DESCRIPTIONS[name],
            "step_time_s": med,
            "img_per_s": args.batch / med,  # instances (of 2 views each) a second
            "views_per_s": args.batch * args.views / med,
            "round_medians_s": [statistics.median(r["step_times_s"]) for r in ok],
            "step_times_s": times,
            "warmup_times_s": [t for r in ok for t in r["warmup_times_s"]],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "peak_rss_mb_rounds": [r["peak_rss_mb"] for r in ok],
            "step_peak_rss_mb": max(r["step_peak_rss_mb"] for r in ok),
            "rss_before_step_mb": ok[0]["rss_before_step_mb"],
            "loss0": ok[0]["loss0"],
            "loss0_rounds": [r["loss0"]["loss"] for r in ok],
            "threads": ok[0]["threads"],
            **{k: ok[0][k] for k in ("dtypes", "optimizer", "reference_commit") if k in ok[0]},
            **(
                {"errors": [r["error"] for r in rounds if "error" in r]}
                if len(ok) < len(rounds)
                else {}
            ),
        }
    ok = {n: r for n, r in results.items() if "step_time_s" in r}
    ratios: dict[str, Any] = {"speedup_vs_reference": {}, "rss_vs_reference": {}}
    ratios["step_rss_vs_reference"] = {}
    ratios["over_floor"] = {}
    ratios["loss0_rel_diff_vs_ours_fp32_nchw"] = {}
    ref = ok.get("reference")
    for name, r in ok.items():
        if ref is not None and name != "reference" and CONFIGS[name][0] == "ours":
            ratios["speedup_vs_reference"][name] = ref["step_time_s"] / r["step_time_s"]
            ratios["rss_vs_reference"][name] = r["peak_rss_mb"] / ref["peak_rss_mb"]
            ratios["step_rss_vs_reference"][name] = r["step_peak_rss_mb"] / ref["step_peak_rss_mb"]
        floor = FLOOR_OF.get(name)
        if floor in ok:
            ratios["over_floor"][f"{name}/{floor}"] = r["step_time_s"] / ok[floor]["step_time_s"]
        base = ok.get("ours_fp32_nchw")
        if base is not None and name != "ours_fp32_nchw" and CONFIGS[name][0] != "floor":
            ratios["loss0_rel_diff_vs_ours_fp32_nchw"][name] = rel(
                r["loss0"]["loss"], base["loss0"]["loss"]
            )
    return results, ratios


DESCRIPTIONS = {
    "reference": "authors' train_cifar_npid_cld.py step (fp32, CPU-adapted, see docstring)",
    "ours_fp32_nchw": "recipe, method.channels_last=false, fp32",
    "ours_fp32_channels_last": "recipe, method.channels_last=true, fp32",
    "ours_bf16_channels_last": "recipe, channels_last, bf16 autocast around compute_loss",
    "ours_bf16_channels_last_compile": "as above + method.compile_backbone=true",
    "ours_fp32_channels_last_compile": "recipe, channels_last, fp32, method.compile_backbone=true",
    "backbone_floor": "CIFAR ResNet-18 alone, 2 views, mean loss, SGD, fp32 NCHW",
    "backbone_floor_channels_last": "floor, fp32 channels_last",
    "backbone_floor_bf16_channels_last": "floor, channels_last, bf16 autocast",
}


def targets(
    results: dict[str, Any], ratios: dict[str, Any], default: dict[str, Any]
) -> dict[str, Any]:
    name = default.get("config")
    speed = ratios["speedup_vs_reference"].get(name)
    rss = ratios["rss_vs_reference"].get(name)
    return {
        "recipe_config": name,
        "speedup_min": TARGET_SPEEDUP,
        "rss_ratio_max": TARGET_RSS,
        "speedup": speed,
        "rss_ratio": rss,
        "met": None
        if speed is None or rss is None
        else (speed >= TARGET_SPEEDUP and rss <= TARGET_RSS),
    }


def markdown(results: dict[str, Any], ratios: dict[str, Any]) -> str:
    lines = [
        "| config | s/step | img/s | peak RSS (MiB) | step RSS (MiB) | speed-up vs ref | RSS vs ref |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "step_time_s" not in r:
            lines.append(f"| {name} | skipped: {r['skipped'][:60]} | | | | | |")
            continue
        sp = ratios["speedup_vs_reference"].get(name)
        rs = ratios["rss_vs_reference"].get(name)
        lines.append(
            f"| {name} | {r['step_time_s']:.3f} | {r['img_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['step_peak_rss_mb']:.0f} | {'' if sp is None else f'{sp:.2f}x'} | "
            f"{'' if rs is None else f'{rs:.2f}x'} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=256, help="images per view")
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--k", type=int, default=128, help="CLD clusters")
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 stem width")
    ap.add_argument("--bank-size", type=int, default=50000, help="memory bank rows (CIFAR)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per child")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per child")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--configs", default="", help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--child-timeout", type=int, default=3600, help="seconds per child")
    ap.add_argument("--quick", action="store_true", help="batch 16, width 8, k 8, 1 round, 1 step")
    ap.add_argument("--out", default=None, help="default: results/cpu_step[_<class>].json")
    ap.add_argument("--cpu-class", default="native", choices=list(CPU_CLASSES))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--init-state", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.width, args.k, args.rounds, args.steps = 16, 8, 8, 1, 1
    if args.views != 2:
        ap.error("NPID+CLD as the reference runs it uses exactly 2 views")
    if args.k > args.batch:
        ap.error("--k must not exceed --batch")
    return args


def enter_cpu_class(args: argparse.Namespace) -> None:
    """Re-run this script under the CPU class's environment unless it is already set (torch
    reads it at import); the children inherit it."""
    env = CPU_CLASSES[args.cpu_class]
    if any(os.environ.get(k) != v for k, v in env.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})
    if args.out is None:
        name = "cpu_step.json" if args.cpu_class == "native" else f"cpu_step_{args.cpu_class}.json"
        args.out = str(RESULTS.with_name(name))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.child:
        enter_cpu_class(args)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    import torch

    names = [n for n in CONFIGS if not (args.quick and n in QUICK_SKIP)]
    if args.configs:
        wanted = args.configs.split(",")
        unknown = set(wanted) - set(CONFIGS)
        if unknown:
            raise SystemExit(f"unknown configs: {sorted(unknown)}")
        names = [n for n in CONFIGS if n in wanted]
    info = machine_info("cpu")
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    default = recipe_default(args)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    mirror_ok = (MIRROR / "HEAD").exists()
    with tempfile.TemporaryDirectory() as tmp:
        init_state = Path(tmp) / "init.pt"
        model, _ = build_ours(args, False, False)
        torch.save(reference_state(model.state_dict()), init_state)
        del model
        probe = dtype_probe()
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if name == "reference" and not mirror_ok:
                    runs[name].append({"error": f"reference mirror not found at {MIRROR}"})
                    continue
                t0 = time.perf_counter()
                res = run_one(args, name, init_state)
                runs[name].append(res)
                msg = res.get("error") or (
                    f"{statistics.median(res['step_times_s']):.3f} s/step, "
                    f"peak RSS {res['peak_rss_mb']:.0f} MiB, loss0 {res['loss0']['loss']:.6f}"
                )
                print(f"round {r} {name:<34} {msg} ({time.perf_counter() - t0:.0f} s)", flush=True)
            results, ratios = summarise(runs, args)
            out = {
                "command": shlex.join([sys.executable, *sys.argv]),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": {**info, "load_average_at_end": list(os.getloadavg())},
                "cpu_class": {"name": args.cpu_class, "env": CPU_CLASSES[args.cpu_class]},
                "torch": torch.__version__,
                "settings": {
                    k: v for k, v in vars(args).items() if k not in ("child", "init_state")
                },
                "recipe_default": default,
                "results": results,
                "ratios": ratios,
                "targets": targets(results, ratios, default),
                "bf16_dtype_probe": probe,
                "rounds_completed": r + 1,
            }
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=2))
    print()
    print(markdown(results, ratios))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
