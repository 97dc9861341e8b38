"""Fail fast on bad configs: unknown keys and invalid values are reported with the key's name."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from cld_lightning.cld.config import CLDConfig


class ConfigError(ValueError):
    """A configuration problem, named by its key."""


#: keys that moved elsewhere: ``(group, key) -> where it lives now``
MOVED_KEYS = {("method", "sync_bn"): "trainer.sync_batchnorm"}


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
            f"{group}.{k} is now {MOVED_KEYS[(group, k)]}"
            for k in unknown
            if (group, k) in MOVED_KEYS
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


def check_cld(node: Any) -> CLDConfig:
    """Validate the ``cld`` group into a :class:`CLDConfig` (unknown keys/values named)."""
    try:
        return CLDConfig.from_any(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err


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
    """Validate everything cld-train instantiates; returns the CLD settings."""
    cld = check_cld(cfg.cld)
    check_target_keys(cfg.method, "method", provided=("backbone", "num_samples", "cld"))
    check_target_keys(cfg.data, "data")
    check_target_keys(cfg.backbone, "backbone", provided=("in_channels",))
    check_target_keys(cfg.trainer, "trainer", provided=("callbacks", "logger"))
    for group in ("logger", "callbacks"):
        for name, node in (cfg.get(group) or {}).items():
            if node is not None:
                check_target_keys(node, f"{group}.{name}")
    return cld
