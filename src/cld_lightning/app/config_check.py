"""Fail fast on bad configs: unknown keys and invalid values are reported with the key's name."""

from __future__ import annotations

import inspect
import logging
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from cld_lightning.app.errors import ConfigError
from cld_lightning.cld.config import CLDConfig

log = logging.getLogger("cld_lightning.app.config_check")

#: top-level nodes of ``train.yaml`` that are config groups (checked by their own checkers)
TRAIN_GROUPS = ("method", "cld", "data", "backbone", "trainer", "logger", "callbacks", "paths")


@dataclass
class SelectionOptions:
    """``selection``: label-free model selection at the end of training (see ``train.yaml``)."""

    enabled: bool = True
    num_images: int = 2000
    num_clusters: int = 10
    score: str = "retrieval"
    lidar_views: int = 2

    def __post_init__(self) -> None:
        from cld_lightning.eval.selection import SCORES

        _require(self.num_images >= 1, "selection.num_images must be >= 1", self.num_images)
        _require(self.num_clusters >= 1, "selection.num_clusters must be >= 1", self.num_clusters)
        _require(self.score in SCORES, f"selection.score must be one of {SCORES}", self.score)
        _require(self.lidar_views >= 2, "selection.lidar_views must be >= 2", self.lidar_views)


@dataclass
class PlotsOptions:
    """``plots``: embedding map and cluster-size histogram at the end of training."""

    enabled: bool = True
    method: str = "tsne"
    max_points: int = 2000

    def __post_init__(self) -> None:
        from cld_lightning.eval.plots import Method

        methods = typing.get_args(Method)
        _require(self.method in methods, f"plots.method must be one of {methods}", self.method)
        _require(self.max_points >= 1, "plots.max_points must be >= 1", self.max_points)


@dataclass
class TrainOptions:
    """The top-level keys of ``train.yaml`` that are not config groups (:data:`TRAIN_GROUPS`);
    the defaults are the file's values (a test checks this)."""

    task_name: str = "train"
    tags: list[str] = field(default_factory=list)
    seed: int = 0
    ckpt_path: str | None = None
    trust_checkpoint: bool = False
    final_knn: bool = True
    baselines: bool = True
    selection: SelectionOptions | None = field(default_factory=SelectionOptions)
    plots: PlotsOptions | None = field(default_factory=PlotsOptions)
    optimized_metric: str | None = None


#: Hydra ConfigStore name of the ``cld`` group's schema (``cld/on.yaml`` and ``cld/off.yaml`` extend it)
CLD_SCHEMA = "_schema"


def register_schemas() -> None:
    """Register the structured-config schemas in Hydra's ConfigStore: ``cld/_schema`` is
    :class:`CLDConfig`, so the ``cld`` group takes its keys, types and defaults from the dataclass
    (no YAML copy) and Hydra names the key of a mistyped override (``cld.weight=abc``). Runs on
    import of this module (``cld-train`` and ``cld-eval`` import it before composing); call it
    before composing ``conf/`` with Hydra's compose API in your own code."""
    ConfigStore.instance().store(group="cld", name=CLD_SCHEMA, node=CLDConfig)


def _require(ok: bool, message: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{message}, got {value!r}")


#: keys that moved elsewhere: ``(group, key) -> where it lives now``. Renamed constructor
#: arguments of the methods come from :mod:`cld_lightning.methods.legacy` (e.g. BYOL's
#: ``target_momentum`` -> ``ema_momentum``): a config with the old name is refused, naming the new.
MOVED_KEYS = {("method", "sync_bn"): "trainer.sync_batchnorm"}


def moved_key(target: Any, group: str, key: str) -> str | None:
    """Where ``group.key`` lives now (:data:`MOVED_KEYS`, or the target's old argument names,
    :func:`cld_lightning.methods.legacy.legacy_arguments`)."""
    if (group, key) in MOVED_KEYS:
        return MOVED_KEYS[(group, key)]
    from cld_lightning.methods.legacy import legacy_arguments

    renamed = legacy_arguments(target).get(key) if isinstance(target, type) else None
    return f"{group}.{renamed}" if renamed else None


def accepted_keys(target: Any) -> tuple[set[str], bool]:
    """Keyword names accepted by ``target`` (a class or function), following ``**kwargs`` up the MRO.

    Returns ``(names, open_ended)``; ``open_ended`` is True if some ``**kwargs`` is never resolved.
    """
    names: set[str] = set()
    funcs = (
        [c.__init__ for c in inspect.getmro(target) if "__init__" in c.__dict__]
        if inspect.isclass(target)
        else [target]
    )
    for func in funcs:
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            return names, True
        has_var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind is not p.VAR_POSITIONAL and p.name != "self":
                names.add(p.name)
        if not has_var_kw:
            return names, False
    return names, True


def check_target_keys(node: DictConfig, group: str, provided: tuple[str, ...] = ()) -> None:
    """Every key of a ``_target_`` node must be a parameter of the target."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"`{group}` must be a config with a `_target_` key")
    try:
        target = get_object(str(node._target_))
    except Exception as err:
        raise ConfigError(f"{group}._target_: cannot import {node._target_!r} ({err})") from err
    names, open_ended = accepted_keys(target)
    if open_ended:
        return
    keys = [k for k in node.keys() if not str(k).startswith("_")]
    unknown = [k for k in keys if k not in names]
    if unknown:
        moved = [
            f"{group}.{k} is now {new}"
            for k in unknown
            if (new := moved_key(target, group, str(k))) is not None
        ]
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{group}.{k}' for k in unknown)} for {node._target_}; "
            + (f"{'; '.join(moved)}; " if moved else "")
            + f"valid keys: {', '.join(sorted(names - set(provided)))}"
        )
    clash = [k for k in keys if k in provided]
    if clash:
        raise ConfigError(
            f"{', '.join(f'{group}.{k}' for k in clash)} is set by cld-train itself; remove it"
        )


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        names = [n for a in typing.get_args(hint) for n in _type_name(a).split(" | ")]
        return " | ".join(dict.fromkeys(names))
    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(sorted({type(a).__name__ for a in typing.get_args(hint)}))
    return getattr(hint, "__name__", str(hint))


def value_fits(value: Any, hint: Any) -> bool | None:
    """Whether a config value fits a type annotation: True, False, or None (cannot tell, e.g. a
    class such as ``Strategy`` that a config cannot hold)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        fits = [value_fits(value, a) for a in args]
        return True if any(f is True for f in fits) else (None if None in fits else False)
    if origin is typing.Literal:  # the kind only (str, int): Lightning checks the value itself
        return type(value) in {type(a) for a in args}
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return None


#: keys that also take ``auto``: cld-train decides them per device before instantiating
#: (:mod:`cld_lightning.app.device_choice`)
AUTO_KEYS = {
    "trainer": ("precision",),
    "backbone": ("channels_last",),
    "method": ("channels_last",),
}


def check_value_types(node: DictConfig, group: str) -> None:
    """Every value of a ``_target_`` node must fit the target's type annotation (e.g.
    ``trainer.max_steps=abc``: ``trainer.max_steps expected int, got 'abc'``); keys whose type a
    config cannot express are not checked, nor ``auto`` in :data:`AUTO_KEYS`."""
    try:
        hints = typing.get_type_hints(get_object(str(node._target_)).__init__)
    except Exception:  # no annotations to read: nothing to check
        return
    values = OmegaConf.to_container(node, resolve=True)
    assert isinstance(values, dict)
    for key, value in values.items():
        hint = hints.get(str(key))
        if value == "auto" and key in AUTO_KEYS.get(group, ()):
            continue
        if hint is not None and value_fits(value, hint) is False:
            raise ConfigError(
                f"{group}.{key} expected {_type_name(hint)}, got {value!r} ({type(value).__name__})"
            )


def check_cld(node: Any) -> CLDConfig:
    """Validate the ``cld`` group into a :class:`CLDConfig` (unknown keys/values named)."""
    try:
        return CLDConfig.from_any(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err


def warn_clusters_vs_batch(cld: CLDConfig, batch_size: Any) -> None:
    """Warn when the batch k-means gets ``k >=`` the batch ``B`` it clusters (per process; with
    ``cld.cluster_scope=global`` the batches of all processes, so no warning here): at least
    ``k - B`` clusters stay empty every step. A warning, not an error: the reference ImageNet
    recipe runs k=120 on 64 images per GPU on purpose."""
    if not cld.enabled or cld.cluster_scope != "local" or not isinstance(batch_size, int):
        return
    if cld.num_clusters >= batch_size:
        log.warning(
            "cld.num_clusters=%d >= data.batch_size=%d: the per-process batch k-means can put "
            "every image in a cluster of its own (little grouping) and leaves %d or more "
            "clusters empty every step (the reference ImageNet recipe does this on purpose, "
            "k=120 on 64 images per GPU; otherwise choose k below the batch size)",
            cld.num_clusters,
            batch_size,
            cld.num_clusters - batch_size,
        )


def check_train_options(cfg: DictConfig) -> TrainOptions:
    """Validate the top-level keys of a train config (everything but the groups and ``hydra``)
    against :class:`TrainOptions`: unknown keys, wrong types and invalid values are named."""
    own: dict[str, Any] = {}
    for key in cfg.keys():
        if key in TRAIN_GROUPS or key == "hydra":
            continue
        value = cfg[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        own[str(key)] = value
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainOptions), own))  # type: ignore[return-value]
    except ConfigKeyError as err:
        parent, _, name = str(err.full_key).rpartition(".")
        schema = {"selection": SelectionOptions, "plots": PlotsOptions}.get(parent, TrainOptions)
        valid = sorted(f.name for f in fields(schema))
        if schema is TrainOptions:
            valid += [f"{g} (group)" for g in TRAIN_GROUPS]
        raise ConfigError(
            f"unknown key {err.full_key}; valid keys{' of ' + parent if parent else ''}: "
            + ", ".join(valid)
        ) from None
    except ValidationError as err:
        raise ConfigError(f"{err.full_key}: {str(err).splitlines()[0]}") from None
    except ValueError as err:
        raise ConfigError(str(err)) from err


#: ``eval.yaml`` nodes whose keys are free (merged into another config)
EVAL_FREE_NODES = ("data_overrides",)


def eval_keys() -> dict[str, set[str]]:
    """The keys ``eval.yaml`` defines, read from the file itself: ``{"": top level (with its
    config groups), section: its keys}``."""
    import yaml

    data = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "conf" / "eval.yaml").read_text()
    )
    groups = {
        next(iter(d)) for d in data.get("defaults", []) if isinstance(d, dict) and len(d) == 1
    }
    keys: dict[str, set[str]] = {"": set(data) | groups}
    for name, value in data.items():
        if isinstance(value, dict) and name not in EVAL_FREE_NODES:
            keys[name] = set(value)
    return keys


def check_eval_keys(cfg: DictConfig) -> None:
    """``cld-eval``: a key ``eval.yaml`` does not have (e.g. ``+trust_checkpont=true``) is one
    line naming it and the valid keys (Hydra's struct mode catches typos without ``+``)."""
    for section, valid in eval_keys().items():
        node = cfg if not section else cfg.get(section)
        if not isinstance(node, DictConfig):
            continue
        unknown = [str(k) for k in node.keys() if str(k) not in valid]
        if unknown:
            prefix = f"{section}." if section else ""
            raise ConfigError(
                f"unknown key(s) {', '.join(prefix + k for k in unknown)}; valid keys"
                f"{' of ' + section if section else ''}: {', '.join(sorted(valid))}"
            )


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """The run folder must be creatable and writable before any training starts."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"output folder {str(out)!r} is not writable: {err.strerror or err}"
        ) from err
    return out


def check_train_config(cfg: DictConfig) -> CLDConfig:
    """Validate everything cld-train instantiates; returns the CLD settings. The checkpoint of a
    ``ckpt_path`` is checked by :func:`cld_lightning.app.checkpoints.check_resume_checkpoint`."""
    check_train_options(cfg)
    cld = check_cld(cfg.cld)
    check_target_keys(cfg.method, "method", provided=("backbone", "num_samples", "cld"))
    check_target_keys(cfg.data, "data")
    check_target_keys(cfg.backbone, "backbone", provided=("in_channels",))
    check_target_keys(cfg.trainer, "trainer", provided=("callbacks", "logger"))
    check_value_types(cfg.trainer, "trainer")
    warn_clusters_vs_batch(cld, cfg.data.get("batch_size"))
    for group in ("logger", "callbacks"):
        for name, node in (cfg.get(group) or {}).items():
            if node is not None:
                check_target_keys(node, f"{group}.{name}")
    return cld
