"""``cld-eval``: weighted kNN, linear probe, semi-supervised fine-tuning, long-tail and transfer
evaluation of a pretrained checkpoint; results written as JSON next to the checkpoint (or into
``output_dir``), atomically, after a check that the folder is writable before any work."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset

from cld_lightning.app.build import build_datamodule, build_model
from cld_lightning.app.checkpoints import fit_problems, read_checkpoint
from cld_lightning.app.config_check import check_eval_keys, check_output_dir, register_schemas
from cld_lightning.app.errors import ConfigError, one_line
from cld_lightning.data.errors import DataError
from cld_lightning.modules.checkpoint_io import (
    UntrustedCheckpointError,
    atomic_write,
    check_stored_targets,
)

log = logging.getLogger("cld_lightning.app.evaluate")
# the configs travel inside the package (the repository's top-level conf/ links here)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def load_pretrained(
    ckpt_path: str | Path, map_location: str = "cpu", trust: bool = False
) -> tuple[Any, dict, dict]:
    """Rebuild the LightningModule of a ``cld-train`` checkpoint from the config stored inside it
    (read safely; ``trust`` = full unpickling). Every problem is a one-line ``ConfigError``."""
    return _read_pretrained(ckpt_path, map_location, trust)[:3]


def _read_pretrained(
    ckpt_path: str | Path, map_location: str = "cpu", trust: bool = False
) -> tuple[Any, dict, dict, dict[str, Any]]:
    """:func:`load_pretrained` plus the run's progress (``global_step``, ``epoch``) from the same
    read of the file."""
    path = Path(ckpt_path)
    ckpt = read_checkpoint(path, trust=trust)
    train_cfg = ckpt.get("cld_lightning_config")
    meta = ckpt.get("cld_lightning_meta")
    if train_cfg is None or meta is None:
        raise ConfigError(
            f"ckpt_path: {str(path)!r} was not written by cld-train (no stored config); "
            "load it yourself and call the cld_lightning.eval functions"
        )
    try:  # the stored config names only this project's classes (else: trust_checkpoint)
        check_stored_targets(train_cfg, ("method", "backbone", "data"), path, trust)
    except UntrustedCheckpointError as err:
        raise ConfigError(f"ckpt_path: {err}") from None
    try:
        model = build_model(train_cfg["method"], train_cfg["backbone"], train_cfg["cld"], meta)
    except (TypeError, ValueError, KeyError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"ckpt_path: the config stored in {str(path)!r} does not build a model: {reason}"
        ) from None
    problems = fit_problems(model, ckpt, optimizer=False)  # loads the weights when they fit
    if problems:
        raise ConfigError(
            f"ckpt_path: {str(path)!r} does not fit the model its stored config builds: "
            f"{'; '.join(problems)}"
        )
    model.to(map_location).eval()
    progress = {"global_step": ckpt.get("global_step"), "epoch": ckpt.get("epoch")}
    return model, train_cfg, meta, progress


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_eval_datamodule(cfg: DictConfig, train_cfg: dict) -> Any:
    data_cfg = (
        OmegaConf.to_container(cfg.data, resolve=True)
        if cfg.get("data")
        else dict(train_cfg["data"])
    )
    overrides = cfg.get("data_overrides")
    if overrides is not None and len(overrides):
        data_cfg.update(OmegaConf.to_container(overrides, resolve=True))
    return build_datamodule(data_cfg, local_rank_zero_prepares=False)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluations enabled in ``cfg``; returns (and writes) the results dict."""
    from cld_lightning.eval import extract_features, plot_embedding

    check_eval_keys(cfg)
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device)
    trust = bool(cfg.get("trust_checkpoint", False))
    if not Path(str(cfg.ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path: no checkpoint file at {str(cfg.ckpt_path)!r}")
    folder = _output_folder(cfg)  # writable before any work: finished results are never lost
    model, train_cfg, meta, progress = _read_pretrained(cfg.ckpt_path, trust=trust)
    dm = build_eval_datamodule(cfg, train_cfg)
    if dm.in_channels != meta["in_channels"]:
        raise ConfigError(
            f"data: the checkpoint's backbone takes {meta['in_channels']} channel(s) but "
            f"{dm.dataset_name} has {dm.in_channels}; transfer needs data with the same channels"
        )
    model.to(device)
    loaders = dm.val_dataloader()
    mem_loader, test_loader = loaders
    results: dict[str, Any] = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "dataset": dm.dataset_name,
        "transfer": dm.dataset_name != train_cfg["data"].get("dataset"),
        "num_classes": int(dm.num_classes),
    }
    if cfg.knn.enabled or cfg.plots.enabled:
        mem_z, mem_y, _ = extract_features(model, mem_loader, device, progress=cfg.progress)
        test_z, test_y, _ = extract_features(model, test_loader, device, progress=cfg.progress)
    if cfg.knn.enabled:
        seed = int(train_cfg.get("seed", cfg.seed))
        results.update(
            _knn_results(cfg, model, dm, loaders, (mem_z, mem_y, test_z, test_y), device, seed)
        )
    if cfg.linear.enabled:
        seed = int(train_cfg.get("seed", cfg.seed))
        from cld_lightning.eval.verdict import run_context

        context = run_context(train_cfg, progress["global_step"], progress["epoch"])
        results.update(_linear_results(cfg, model, dm, loaders, device, seed, context))
    if cfg.long_tail_protocol.enabled:
        results.update(_lt_protocol_results(cfg, model, dm, loaders[1], device))
    if cfg.semi_supervised.enabled:
        results.update(_semi_supervised_results(cfg, model, dm, loaders, device))
    out = Path(cfg.output_json) if cfg.output_json else folder / f"eval_{dm.dataset_name}.json"
    if cfg.plots.enabled:
        n = min(int(cfg.plots.max_points), test_z.shape[0])
        png = out.with_suffix(".embedding.png")
        names = list(getattr(dm, "class_names", []) or []) or None
        plot_embedding(test_z[:n], test_y[:n], png, method=cfg.plots.method, class_names=names)
        results["plots/embedding"] = str(png)
    text = json.dumps(results, indent=2, sort_keys=True)
    atomic_write(out, lambda f: f.write(text.encode()))
    results["output_json"] = str(out)
    print(json.dumps(results, indent=2, sort_keys=True), flush=True)
    return results


def _knn_results(
    cfg: DictConfig,
    model: Any,
    dm: Any,
    loaders: list[DataLoader],
    embeddings: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    device: torch.device,
    seed: int,
) -> dict[str, Any]:
    """:func:`cld_lightning.eval.knn_report` of the embeddings (NPID and class-balanced
    protocols; labelled memory images only; many/medium/few-shot accuracies on a long-tailed
    memory, ``long_tail``) and the same report of its baselines."""
    from cld_lightning.eval import knn_report

    mem_z, mem_y, test_z, test_y = embeddings
    temperature = cfg.knn.temperature or getattr(model, "knn_temperature", 0.1)
    if cfg.long_tail not in ("auto", True, False):
        raise ConfigError(f"long_tail must be auto, true or false, got {cfg.long_tail!r}")
    long_tail = None if cfg.long_tail == "auto" else bool(cfg.long_tail)
    results: dict[str, Any] = {"knn/k": int(cfg.knn.k), "knn/temperature": float(temperature)}
    results.update(
        knn_report(
            mem_z,
            mem_y,
            test_z,
            test_y,
            dm.num_classes,
            int(cfg.knn.k),
            float(temperature),
            long_tail=long_tail,
            backend=cfg.knn.backend,
        )
    )
    if "knn/shot_rule_paper" in results:
        results["knn/overall"] = results["knn/top1"]  # the name cld-eval used before knn_report
    if cfg.knn.get("baselines", True):
        from cld_lightning.eval.baselines import knn_baselines

        mem_loader, test_loader = loaders
        results.update(
            knn_baselines(
                model,
                mem_loader,
                test_loader,
                dm.num_classes,
                k=int(cfg.knn.k),
                temperature=float(temperature),
                seed=seed,
                device=device,
                long_tail=long_tail,
            )
        )
    return results


def _output_folder(cfg: DictConfig) -> Path:
    """Where the results go (``output_json``'s folder, else ``output_dir``, else the checkpoint's
    folder), created and checked writable: a ``ConfigError`` naming it, before any work."""
    if cfg.get("output_json"):
        folder = Path(cfg.output_json).parent
    elif cfg.get("output_dir"):
        folder = Path(cfg.output_dir)
    else:
        folder = Path(cfg.ckpt_path).resolve().parent
    try:
        return check_output_dir(folder)
    except ConfigError as err:
        raise ConfigError(f"{err}; set output_dir=<a writable folder>") from None


def _linear_results(
    cfg: DictConfig,
    model: Any,
    dm: Any,
    loaders: list[DataLoader],
    device: torch.device,
    seed: int = 0,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Linear probe on frozen backbone features (``linear.recipe``: fast | reference), its
    class-balanced (logit-adjusted) figure, its baselines (same recipe: standardised raw pixels,
    the seeded untrained network), many/medium/few-shot accuracy on a long-tailed memory set and
    the verdict against the baselines (``verdict/linear*``)."""
    from cld_lightning.eval import FAST_RECIPE, REFERENCE_RECIPE, extract_features
    from cld_lightning.eval.linear_probe import (
        linear_baselines,
        linear_probe_result,
        standardize_features,
    )
    from cld_lightning.eval.verdict import verdict
    from cld_lightning.longtail import is_long_tailed, shot_accuracy

    recipe = {"fast": FAST_RECIPE, "reference": REFERENCE_RECIPE}.get(cfg.linear.recipe)
    if recipe is None:
        raise ConfigError(f"linear.recipe must be 'fast' or 'reference', got {cfg.linear.recipe!r}")
    balanced = bool(cfg.linear.get("balanced", True))
    tau = float(cfg.linear.get("tau", 1.0))
    if not math.isfinite(tau) or tau < 0:
        raise ConfigError(f"linear.tau must be a finite number >= 0, got {tau!r}")
    mem_loader, test_loader = loaders
    feat_fn = model.features
    mem_f, mem_fy, _ = extract_features(
        model, mem_loader, device, embed_fn=feat_fn, progress=cfg.progress
    )
    test_f, test_fy, _ = extract_features(
        model, test_loader, device, embed_fn=feat_fn, progress=cfg.progress
    )
    standardize = bool(cfg.linear.get("standardize", False))
    if standardize:  # per-dimension z-score with the memory set's statistics (pixels: always)
        mem_f, test_f = standardize_features(mem_f, test_f)
    keep = mem_fy >= 0  # unlabelled memory images cannot train the probe
    res = linear_probe_result(
        mem_f[keep], mem_fy[keep], test_f, test_fy, dm.num_classes, recipe, tau
    )
    out: dict[str, Any] = {"linear/top1": res.top1, "linear/recipe": cfg.linear.recipe}
    if balanced:
        out["linear/balanced_top1"] = res.balanced_top1
        out["linear/tau"] = tau
    counts = res.train_class_counts
    long_tail = cfg.long_tail is True or (cfg.long_tail == "auto" and is_long_tailed(counts))
    if long_tail:
        preds = {"": res.pred, "balanced_": res.balanced_pred} if balanced else {"": res.pred}
        for prefix, pred in preds.items():
            shots = shot_accuracy(pred, test_fy, counts)
            out.update(  # a group with no class (NaN) is left out, as in the kNN report
                {
                    f"linear/{prefix}{g}": shots[g]
                    for g in ("many", "medium", "few")
                    if not math.isnan(shots[g])
                }
            )
    if cfg.linear.get("baselines", True):
        out.update(
            linear_baselines(
                model,
                mem_loader,
                test_loader,
                dm.num_classes,
                recipe,
                seed=seed,
                device=device,
                tau=tau if balanced and long_tail else None,
                standardize=standardize,
            )
        )
        v = verdict(out, context, protocol="linear")
        if v.available:
            out.update(v.flags("verdict/linear_"))
            out["verdict/linear"] = v.summary
            out["verdict/linear_advice"] = list(v.advice)
            log.info("linear probe:\n%s", "\n".join(v.lines()))
    return out


def _lt_protocol_results(
    cfg: DictConfig, model: Any, dm: Any, test_loader: DataLoader, device: torch.device
) -> dict[str, Any]:
    """SDCLR/BCL's long-tail protocol (:mod:`cld_lightning.eval.lt_protocol`): ``linear.recipe``
    probes on the *balanced* training set (the data config with ``imbalance_ratio``,
    ``split_file`` and the correlated copies off), tested on the test set."""
    from cld_lightning.eval import FAST_RECIPE, REFERENCE_RECIPE, extract_features
    from cld_lightning.eval.linear_probe import standardize_features
    from cld_lightning.eval.lt_protocol import long_tail_protocol
    from cld_lightning.longtail import is_long_tailed

    opts = cfg.long_tail_protocol
    shots, splits = list(opts.shots), opts.num_splits
    if not shots or not all(type(s) is int and s >= 1 for s in shots):
        raise ConfigError(f"long_tail_protocol.shots must list integers >= 1, got {shots}")
    if type(splits) is not int or splits < 1:
        raise ConfigError(f"long_tail_protocol.num_splits must be an integer >= 1, got {splits!r}")
    recipe = {"fast": FAST_RECIPE, "reference": REFERENCE_RECIPE}.get(cfg.linear.recipe)
    if recipe is None:
        raise ConfigError(f"linear.recipe must be 'fast' or 'reference', got {cfg.linear.recipe!r}")
    off = {"imbalance_ratio": None, "split_file": None, "copies": 1, "num_sources": None}
    balanced = type(dm)(**{**dict(dm.hparams), **off})
    balanced.prepare_data()
    balanced.setup("fit")
    embed = model.features
    train_f, train_y, _ = extract_features(
        model, balanced.val_dataloader()[0], device, embed_fn=embed, progress=cfg.progress
    )
    test_f, test_y, _ = extract_features(
        model, test_loader, device, embed_fn=embed, progress=cfg.progress
    )
    if cfg.linear.get("standardize", False):
        train_f, test_f = standardize_features(train_f, test_f)
    counts = dm.class_counts  # the pretraining set's: many/medium/few by pretraining frequency
    long_tail = cfg.long_tail is True or (cfg.long_tail == "auto" and is_long_tailed(counts))
    return long_tail_protocol(
        train_f,
        train_y,
        test_f,
        test_y,
        dm.num_classes,
        shots,
        splits,
        recipe,
        seed=int(cfg.seed),
        pretrain_counts=counts if long_tail else None,
    )


def _semi_supervised_results(
    cfg: DictConfig, model: Any, dm: Any, loaders: list[DataLoader], device: torch.device
) -> dict[str, Any]:
    """Fine-tune a copy of the backbone on each class-balanced labelled fraction."""
    from cld_lightning.eval import balanced_label_subset, fine_tune

    mem_loader, test_loader = loaders
    memory_set = mem_loader.dataset
    targets = torch.as_tensor(memory_set.targets)
    results: dict[str, Any] = {}
    for fraction in cfg.semi_supervised.fractions:
        idx = balanced_label_subset(targets, float(fraction), seed=cfg.seed)
        loader = DataLoader(
            Subset(memory_set, idx.tolist()),
            batch_size=cfg.semi_supervised.batch_size,
            shuffle=True,
        )
        top1 = fine_tune(
            model.backbone,
            loader,
            test_loader,
            dm.num_classes,
            epochs=cfg.semi_supervised.epochs,
            backbone_lr=cfg.semi_supervised.backbone_lr,
            head_lr=cfg.semi_supervised.head_lr,
            device=device,
            feature_dim=model.feature_dim,
            copy_backbone=True,
        )
        pct = f"{round(float(fraction) * 100, 3):g}pct"
        results[f"semi/{pct}_top1"] = float(top1)
        results[f"semi/{pct}_labels"] = int(idx.numel())
    return results


def main() -> None:
    """Console script ``cld-eval``: registers the config schemas, then runs Hydra."""
    register_schemas()
    hydra_main()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    """One ``cld-eval`` job."""
    try:
        evaluate(cfg)
    except ConfigError as err:
        raise SystemExit(f"cld-eval: configuration error: {err}") from None
    except DataError as err:  # a missing/empty root, a corrupt image, too little data
        raise SystemExit(f"cld-eval: data error: {one_line(err)}") from None


if __name__ == "__main__":
    main()
