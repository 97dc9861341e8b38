"""``cld-train``: Hydra entry point — compose, validate, instantiate, fit, evaluate, return a metric."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning import Callback as pl_Callback

from cld_lightning.app.build import (
    build_datamodule,
    build_model_and_layout,
    data_meta,
    local_rank,
)
from cld_lightning.app.checkpointing import use_safe_checkpoint_io
from cld_lightning.app.checkpoints import (
    check_ckpt_exists,
    check_resume_checkpoint,
    resolve_run_checkpoint,
)
from cld_lightning.app.config_check import check_output_dir, check_train_config, register_schemas
from cld_lightning.app.dashboards import define_wandb_metrics, wandb_loggers, write_plots
from cld_lightning.app.device_choice import apply_device_choices, device_metrics, probe_device
from cld_lightning.app.errors import ConfigError, NonFiniteTrainingError, one_line
from cld_lightning.data.errors import DataError
from cld_lightning.modules.checkpoint_io import UntrustedCheckpointError

log = logging.getLogger("cld_lightning.app.train")
# the configs travel inside the package (the repository's top-level conf/ links here)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _instantiate_list(node: Any) -> list[Any]:
    out = []
    for _, sub in (node or {}).items():
        if sub is not None and "_target_" in sub:
            out.append(hydra.utils.instantiate(sub, _convert_="all"))
    return out


def knn_with_baselines(model: Any, datamodule: Any, seed: int) -> dict[str, float]:
    """Raw-pixel and untrained-network kNN (same memory/test sets, k and σ as ``knn/top1``), and
    the trained backbone feature's kNN, each a :func:`cld_lightning.eval.knn_report` (NPID and
    class-balanced protocols, shot groups on a long tail); see
    :func:`cld_lightning.eval.baselines.knn_baselines`."""
    from cld_lightning.eval.baselines import knn_baselines

    mem_loader, test_loader = datamodule.val_dataloader()
    return knn_baselines(
        model,
        mem_loader,
        test_loader,
        datamodule.num_classes,
        k=model.knn_k,
        temperature=model.knn_temperature,
        seed=seed,
        device=model.device,
    )


def label_free_selection(
    model: Any,
    datamodule: Any,
    num_images: int,
    num_clusters: int,
    score: str,
    seed: int,
    lidar_views: int = 2,
) -> dict[str, float]:
    """The label-free model-selection criterion on held-out images (labels never read).

    Two views per held-out (test-split) image with the pretraining augmentation, seeded so that
    every run of a sweep sees the same views; see :mod:`cld_lightning.eval.selection`. LiDAR
    uses ``lidar_views`` views per image: the same two, then further seeded pairs of passes.
    """
    from torch.utils.data import DataLoader, Subset

    from cld_lightning.data.datasets import MultiViewDataset
    from cld_lightning.eval import extract_view_pairs, label_free_metrics

    source = datamodule.test_dataset.source
    views = MultiViewDataset(source, datamodule.train_transform)
    n = min(num_images, len(views))
    subset = Subset(
        views,
        torch.randperm(len(views), generator=torch.Generator().manual_seed(seed))[:n].tolist(),
    )
    loader = DataLoader(subset, batch_size=256, shuffle=False, num_workers=0)
    from cld_lightning.eval.baselines import embedding_and_feature
    from cld_lightning.eval.features import packed_embedding

    packed, widths = packed_embedding(embedding_and_feature(model))  # one backbone pass
    rng = torch.get_rng_state()
    torch.manual_seed(seed)
    zf: list[torch.Tensor] = []
    try:  # the first pair is the same whatever lidar_views is
        while len(zf) < max(2, lidar_views):
            zf.extend(extract_view_pairs(model, loader, embed_fn=packed))
    finally:
        torch.set_rng_state(rng)
    d = widths[0]
    zf = zf[: max(2, lidar_views)]
    metrics = label_free_metrics(
        zf[0][:, :d],
        zf[1][:, :d],
        num_clusters=num_clusters,
        score=score,
        seed=seed,
        features=(zf[0][:, d:], zf[1][:, d:]),
        lidar_views=([z[:, :d] for z in zf], [z[:, d:] for z in zf]) if len(zf) > 2 else None,
    )
    return {f"selection/{k}": float(v) for k, v in metrics.items()}


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one pretraining job; returns the final metrics (``knn/top1``, ``selection/*``...)."""
    import pytorch_lightning as pl

    cld_cfg = check_train_config(cfg)
    ckpt_path = resolve_run_checkpoint(cfg)  # ckpt_path=auto; never overwrite a run's checkpoints
    if ckpt_path != cfg.get("ckpt_path"):
        with open_dict(cfg):
            cfg.ckpt_path = ckpt_path
    check_resume_checkpoint(cfg, cld_cfg, missing_ok=True)
    check_ckpt_exists(cfg.get("ckpt_path"))
    out_dir = check_output_dir(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg.data)
    meta = data_meta(datamodule)
    facts = probe_device(cfg.trainer.get("accelerator"))  # precision and layout: per device
    model, layout = build_model_and_layout(cfg.method, cfg.backbone, cld_cfg, meta, facts)
    device = apply_device_choices(cfg, facts, layout)
    _write_device_record(device, out_dir)
    callbacks = _build_callbacks(cfg, model, meta, device)
    loggers = _instantiate_list(cfg.get("logger"))
    trainer = _build_trainer(cfg, callbacks, loggers)
    # atomic checkpoint writes; the resume reads with weights_only unless trust_checkpoint=true
    use_safe_checkpoint_io(trainer, trust=bool(cfg.get("trust_checkpoint", False)))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    from cld_lightning.app.faults import GracefulShutdown

    stopped = [c for c in callbacks if isinstance(c, GracefulShutdown) and c.interrupted]
    if stopped:
        code = stopped[0].exit_code
        log.warning(
            "training was interrupted by a signal (exit code %d); resume with ckpt_path=auto "
            "(or ckpt_path=%s)",
            code,
            stopped[0].saved_path,
        )
        return {"interrupted": 1.0, "exit_code": float(code)}
    if not trainer.fast_dev_run:
        check_final_embeddings(model, datamodule, trainer)
    metrics = _final_metrics(cfg, trainer, model, datamodule)
    _publish(cfg, metrics, trainer, model, datamodule, loggers, out_dir, device)
    return metrics


def _write_device_record(device: dict[str, Any], out_dir: Path) -> None:
    """``.hydra/device.yaml`` (``device.yaml`` when Hydra keeps no folder; rank 0): the chosen
    precision and layout with their reasons, next to the config that asked for them."""
    hydra_dir = out_dir / ".hydra"
    if local_rank() == 0:
        folder = hydra_dir if hydra_dir.is_dir() else out_dir
        (folder / "device.yaml").write_text(OmegaConf.to_yaml(device))


def _build_callbacks(
    cfg: DictConfig, model: Any, meta: dict[str, int], device: dict[str, Any] | None = None
) -> list[Any]:
    """The configured callbacks (no progress bar when disabled), a :class:`CLDCallback` when CLD is
    on and none is configured, and the one that stores the resolved config (and the ``device``
    choices) in checkpoints."""
    from cld_lightning.cld.callback import CLDCallback

    callbacks = _instantiate_list(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):
        from pytorch_lightning.callbacks.progress import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if model.cld_enabled and not any(isinstance(c, CLDCallback) for c in callbacks):
        callbacks.append(CLDCallback())
    callbacks.append(
        ResolvedConfigInCheckpoint(OmegaConf.to_container(cfg, resolve=True), meta, device)
    )
    callbacks.append(LastValidationStep())
    return callbacks


def _build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]) -> Any:
    """The Trainer; loggers get the resolved config (and W&B its metric definitions)."""
    if not loggers:  # logger=none: nothing to send learning rates to
        from pytorch_lightning.callbacks import LearningRateMonitor

        callbacks[:] = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all"
    )
    for lg in loggers:
        if hasattr(lg, "log_hyperparams"):
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if trainer.is_global_zero:
        define_wandb_metrics(loggers)
    return trainer


def check_final_embeddings(model: Any, datamodule: Any, trainer: Any) -> None:
    """One test batch through the trained model before any final evaluation: non-finite
    (NaN/inf) embeddings, e.g. a run that diverged in its last steps, stop the run with one line
    instead of NaN figures or an SVD/k-means traceback."""
    from cld_lightning.app.checkpointing import newest_checkpoint
    from cld_lightning.app.errors import NonFiniteTrainingError

    batch = next(iter(datamodule.val_dataloader()[1]), None)
    if batch is None:
        return
    x = batch[0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        finite = bool(torch.isfinite(model.embed(x.to(model.device))).all())
    model.train(was_training)
    if not finite:
        raise NonFiniteTrainingError(
            "the trained model's embeddings are non-finite (NaN/inf) "
            f"({int(getattr(model, 'skipped_steps', 0))} step(s) were skipped for a non-finite "
            "loss): likely method.lr too high or NaN/inf in the input data; last checkpoint: "
            f"{newest_checkpoint(trainer) or 'none written yet'}"
        )


class LastValidationStep(pl_Callback):
    """Remembers the global step of the newest validation inside ``fit``: when the last epoch
    was validated (e.g. ``max_epochs`` a multiple of ``check_val_every_n_epoch``) the weights have
    not changed since, and the final kNN is that validation's (no second pass over the data)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.step = int(trainer.global_step)


def validated_at_final_step(trainer: Any) -> bool:
    """True when ``fit`` validated the final weights (its metrics are in ``callback_metrics``)."""
    seen = [c.step for c in trainer.callbacks if isinstance(c, LastValidationStep)]
    return bool(seen) and seen[0] == int(trainer.global_step)


def _final_metrics(cfg: DictConfig, trainer: Any, model: Any, datamodule: Any) -> dict[str, float]:
    """The trainer's scalar metrics, then the final kNN, label-free selection and baselines."""
    metrics: dict[str, float] = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if torch.is_tensor(v) and v.numel() == 1
    }
    if trainer.fast_dev_run:
        return metrics
    if cfg.get("final_knn", True) and not validated_at_final_step(trainer):
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
        if results:
            metrics.update({k: float(v) for k, v in results[0].items()})
    selection = cfg.get("selection")
    if selection is not None and selection.enabled:
        metrics.update(
            label_free_selection(
                model,
                datamodule,
                selection.num_images,
                selection.num_clusters,
                selection.score,
                cfg.seed,
                selection.get("lidar_views", 2),
            )
        )
    if cfg.get("baselines", True) and trainer.is_global_zero:
        metrics.update(knn_with_baselines(model, datamodule, cfg.seed))
    return metrics


def _publish(
    cfg: DictConfig,
    metrics: dict[str, float],
    trainer: Any,
    model: Any,
    datamodule: Any,
    loggers: list[Any],
    out_dir: Path,
    device: dict[str, Any] | None = None,
) -> None:
    """Rank 0: plots, the W&B run summary, ``metrics.json`` (with the ``device`` choices as
    ``device/*`` numbers) and the printed summary."""
    if not trainer.is_global_zero:
        return
    plots = cfg.get("plots")
    if plots is not None and plots.enabled and not trainer.fast_dev_run:
        written = write_plots(model, datamodule, out_dir, loggers, plots.max_points, plots.method)
        log.info("plots written: %s", written)
    verdict = _run_verdict(cfg, metrics, trainer, out_dir)
    metrics.update(device_metrics(device) if device else {})
    for lg in wandb_loggers(loggers):
        lg.experiment.summary.update({k: v for k, v in metrics.items() if "/" in k})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    _print_summary(metrics, trainer, out_dir, verdict=verdict)


def _run_verdict(cfg: DictConfig, metrics: dict[str, float], trainer: Any, out_dir: Path) -> Any:
    """The learned kNN against raw pixels and the untrained network
    (:func:`cld_lightning.eval.verdict.verdict`): 0/1 flags ``verdict/below_pixels`` and
    ``verdict/below_untrained`` added to ``metrics``, the sentence and the advice (made specific
    to this run's config and step count) written to ``verdict.json``. ``None`` without baselines."""
    from cld_lightning.eval.verdict import run_context, verdict

    context = run_context(
        OmegaConf.to_container(cfg, resolve=True), trainer.global_step, trainer.current_epoch
    )
    result = verdict(metrics, context)
    if not result.available:
        return None
    metrics.update(result.flags())
    text = json.dumps({**result.as_dict(), "context": context}, indent=2, sort_keys=True)
    (out_dir / "verdict.json").write_text(text)
    return result


def _print_summary(
    metrics: dict[str, float], trainer: Any, out_dir: Path, *, verdict: Any = None
) -> None:
    from cld_lightning.app.checkpointing import newest_checkpoint

    ckpt = newest_checkpoint(trainer) or "(none)"
    lines = ["", "=" * 60, "cld-train finished"]
    if "knn/top1" in metrics:
        lines.append(f"  weighted kNN top-1 (test):           {metrics['knn/top1']:.2f} %")
    if "selection/label_free_score" in metrics:
        lines.append(
            f"  label-free selection score:          {metrics['selection/label_free_score']:.2f}"
        )
    for key, label in (
        ("knn/backbone_top1", "same, trained backbone feature"),
        ("knn/pixel_top1", "baseline: raw pixels"),
        ("knn/random_init_top1", "baseline: untrained network"),
        ("knn/random_init_backbone_top1", "baseline: untrained backbone feature"),
    ):
        if key in metrics:
            lines.append(f"  {label + ':':<37}{metrics[key]:.2f} %")
    if "knn/pixel_top1" in metrics and "knn/top1" in metrics:
        untrained = max(
            metrics.get("knn/random_init_top1", 0.0),
            metrics.get("knn/random_init_backbone_top1", 0.0),
        )
        lines.append(
            f"  learned - pixels: {metrics['knn/top1'] - metrics['knn/pixel_top1']:+.2f} pts; "
            f"learned - best untrained: {metrics['knn/top1'] - untrained:+.2f} pts"
        )
    from cld_lightning.eval.knn_summary import knn_summary_lines

    lines += knn_summary_lines(metrics)  # class-balanced kNN and shot groups
    lines += [f"  checkpoint: {ckpt}", f"  outputs:    {out_dir}", "=" * 60]
    if verdict is not None:  # the verdict block closes the summary (text also in verdict.json)
        lines[-1:-1] = ["-" * 60, *verdict.lines()]
    print("\n".join(lines), flush=True)


class _ResolvedConfigMixin:
    """Stores the resolved Hydra config inside every checkpoint (so ``cld-eval`` can rebuild it)."""

    def __init__(self, config: Any, meta: dict[str, int] | None = None, device: Any = None) -> None:
        self.config = config
        self.meta = meta or {}
        self.device = device  # the precision and layout choices with their reasons

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint["cld_lightning_config"] = self.config
        checkpoint["cld_lightning_meta"] = self.meta
        if self.device:
            checkpoint["cld_lightning_device"] = self.device


def _make_config_callback() -> type:
    import pytorch_lightning as pl

    return type("ResolvedConfigInCheckpoint", (_ResolvedConfigMixin, pl.Callback), {})


ResolvedConfigInCheckpoint = _make_config_callback()


def main() -> None:
    """Console script ``cld-train``: registers the config schemas, then runs Hydra."""
    register_schemas()
    hydra_main()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One ``cld-train`` job; returns ``cfg.optimized_metric`` for Hydra sweepers."""
    try:
        metrics = train(cfg)
    except (ConfigError, UntrustedCheckpointError) as err:  # one line each, no traceback
        log.error("configuration error: %s", err)
        raise SystemExit(f"cld-train: configuration error: {err}") from None
    except DataError as err:  # a missing/empty root, a corrupt image, too little data
        log.error("data error: %s", one_line(err))
        raise SystemExit(f"cld-train: data error: {one_line(err)}") from None
    except NonFiniteTrainingError as err:
        raise SystemExit(f"cld-train: training stopped: {err}") from None
    finally:
        _finish_wandb()
    if metrics.get("interrupted"):  # non-zero (128 + signal number), and no further -m job
        raise SystemExit(int(metrics.get("exit_code", 1)))
    name = cfg.get("optimized_metric")
    if name:
        if name not in metrics:
            raise SystemExit(
                f"cld-train: optimized_metric {name!r} was not computed; have {sorted(metrics)}"
            )
        return metrics[name]
    return None


def _finish_wandb() -> None:
    """Close the W&B run between jobs of a multirun."""
    import sys

    if "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if getattr(wandb, "run", None) is not None:
            wandb.finish()


if __name__ == "__main__":
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    main()
