"""Checkpoints that ``cld-train`` resumes from and ``cld-eval`` evaluates: read, checked against a
config, compared. The one place of the application layer that opens a checkpoint file.

- :func:`read_checkpoint`: a Lightning checkpoint on the CPU, or one line naming the path (no such
  file, truncated or corrupt, not a Lightning checkpoint).
- :func:`check_resume_checkpoint`: before a ``cld-train`` resume, a config whose module does not fit
  the checkpoint's weights is named by the keys that differ from the checkpoint's stored config,
  not by Lightning's list of size mismatches.
- :func:`check_ckpt_exists`: a ``ckpt_path`` that names no file is one line.
- :func:`resolve_run_checkpoint`: ``ckpt_path=auto`` (resume ``last.ckpt`` if the run folder has
  one, else start), and a fresh run into a folder that holds checkpoints is refused (never
  overwritten).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cld_lightning.app.build import build_model, method_config
from cld_lightning.app.errors import ConfigError
from cld_lightning.modules.checkpoint_io import (
    UntrustedCheckpointError,
    check_stored_targets,
    load_checkpoint,
)

log = logging.getLogger("cld_lightning.app.checkpoints")

#: Lightning's ``ckpt_path`` keywords (resolved by the Trainer, not files)
CKPT_KEYWORDS = ("last", "best", "hpc")
#: ``ckpt_path=auto``: resume the run folder's ``last.ckpt`` if there is one, else start fresh
AUTO = "auto"
#: top-level keys of a train config that may differ on resume without notice (run-local)
RUN_LOCAL_KEYS = ("paths", "hydra", "ckpt_path", "task_name", "tags", "logger", "callbacks")


def read_checkpoint(path: str | os.PathLike[str], trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint on the CPU (memory-mapped when it can be) with the safe reader
    (:func:`cld_lightning.modules.checkpoint_io.load_checkpoint`; ``trust`` = full unpickling), or
    raise a ``ConfigError`` whose one line names the path: no such file, truncated/corrupt, or
    holding objects only full unpickling can load (then it names ``trust_checkpoint``)."""
    if not os.path.isfile(path):
        raise ConfigError(f"ckpt_path: no checkpoint file at {str(path)!r}")
    try:
        ckpt = load_checkpoint(path, trust=trust)
    except UntrustedCheckpointError as err:
        raise ConfigError(f"ckpt_path: {err}") from None
    except Exception as err:  # noqa: BLE001 (whatever the reader raises, the answer is one line)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"ckpt_path: cannot read the checkpoint {str(path)!r} (truncated or corrupt?): "
            f"{type(err).__name__}: {reason}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"ckpt_path: {str(path)!r} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested mapping (lists are values)."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, name))
        else:
            out[name] = value
    return out


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"key: <stored> in the checkpoint, <current> now"`` for every differing leaf key (the
    method groups with their legacy argument names migrated; :data:`RUN_LOCAL_KEYS` skipped; a key
    absent on one side and ``None`` on the other, e.g. an option added since, is no difference)."""

    def prepare(cfg: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in cfg.items() if k not in RUN_LOCAL_KEYS}
        if isinstance(out.get("method"), Mapping) and "_target_" in out["method"]:
            out["method"] = method_config(out["method"])
        return flatten_config(out)

    old, new = prepare(stored), prepare(current)
    absent = "(absent)"
    for side, other in ((old, new), (new, old)):
        for key in [k for k, v in side.items() if v is None and k not in other]:
            del side[key]
    return [
        f"{key}: {old.get(key, absent)!r} in the checkpoint, {new.get(key, absent)!r} now"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, absent) != new.get(key, absent)
    ]


def fit_problems(model: Any, ckpt: dict[str, Any], optimizer: bool = True) -> list[str]:
    """Why ``ckpt`` does not load into ``model`` (weights, and with ``optimizer`` its optimiser's
    parameter groups), each a short phrase; [] = it fits (and the weights are loaded)."""
    state = dict(ckpt["state_dict"])
    hook = getattr(model, "on_load_checkpoint", None)
    if hook is not None:
        shallow = {**ckpt, "state_dict": state}
        hook(shallow)
        state = shallow["state_dict"]
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying into meta tensors is a no-op, as wanted
        try:
            model.load_state_dict(dict(state), strict=True)
        except RuntimeError as err:
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            got = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
            shapes = [k for k in expected if k in got and expected[k] != got[k]]
            missing = [k for k in expected if k not in got]
            unexpected = [k for k in got if k not in expected]
            if shapes:
                k = shapes[0]
                problems.append(
                    f"{len(shapes)} weight(s) differ in shape (e.g. {k}: {list(got[k])} in the "
                    f"checkpoint, {list(expected[k])} now)"
                )
            if missing:
                problems.append(f"{len(missing)} weight(s) missing from it (e.g. {missing[0]})")
            if unexpected:
                problems.append(
                    f"{len(unexpected)} weight(s) this module lacks (e.g. {unexpected[0]})"
                )
            if not problems:
                problems.append(str(err).strip().splitlines()[0])
    saved = (ckpt.get("optimizer_states") or []) if optimizer else []
    groups = getattr(model, "parameter_groups", None)
    if saved and groups is not None and "param_groups" in saved[0]:
        old = [len(g["params"]) for g in saved[0]["param_groups"]]
        new = [len(g["params"]) for g in groups()]
        if old != new:
            problems.append(f"optimiser parameter-group sizes {old} in the checkpoint, {new} now")
    return problems


def check_resume_checkpoint(cfg: Any, cld: Any = None, missing_ok: bool = False) -> list[str]:
    """Check ``cfg.ckpt_path`` before a ``cld-train`` resume; returns the settings that differ
    from the checkpoint's stored config (logged as a warning when the checkpoint still fits).

    Raises ``ConfigError`` (one line each) when the file is missing (unless ``missing_ok``: then
    nothing is checked) or unreadable, or when the module ``cfg`` builds (on the meta device, with
    the checkpoint's data facts) does not fit the checkpoint's weights or optimiser groups: the
    message names the differing config keys. Lightning's keywords (``last``, ``best``, ``hpc``)
    and URLs are left to Lightning.
    """
    from omegaconf import DictConfig, OmegaConf

    path = cfg.get("ckpt_path")
    if not path or str(path) in CKPT_KEYWORDS or "://" in str(path):
        return []
    if missing_ok and not os.path.exists(str(path)):
        return []
    ckpt = read_checkpoint(str(path), trust=bool(cfg.get("trust_checkpoint", False)))
    current = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    stored, meta = ckpt.get("cld_lightning_config"), ckpt.get("cld_lightning_meta")
    try:  # its method's class is imported to compare settings: this project's classes only
        check_stored_targets(stored, ("method",), path, bool(cfg.get("trust_checkpoint", False)))
    except UntrustedCheckpointError as err:
        raise ConfigError(f"ckpt_path: {err}") from None
    diffs = config_differences(stored, current) if isinstance(stored, Mapping) else []
    problems: list[str] = []
    if meta:
        try:
            with torch.device("meta"):
                model = build_model(
                    current["method"], current["backbone"], cld or current["cld"], meta
                )
        except Exception as err:  # noqa: BLE001 (a dry build that fails leaves the check to Lightning)
            log.debug("resume check: could not build the module on the meta device: %s", err)
        else:
            problems = fit_problems(model, ckpt)
    if problems:
        named = (
            "; ".join(diffs)
            if diffs
            else "none found (the checkpoint holds no cld-train config, or the data differ)"
        )
        raise ConfigError(
            f"ckpt_path={str(path)!r} does not fit this config: {'; '.join(problems)}. Settings "
            f"that differ from the checkpoint's: {named}. Resume with the checkpoint's settings, "
            "or start a new run"
        )
    if diffs:
        log.warning(
            "resuming from %s with settings that differ from the checkpoint's: %s",
            path,
            "; ".join(diffs),
        )
    return diffs


def check_ckpt_exists(ckpt_path: str | None) -> None:
    """A ``ckpt_path`` that names no file is one clear line (Lightning's keywords ``last``,
    ``best``, ``hpc`` are left to the Trainer). The config check lets such paths through so that
    documented commands with placeholder paths validate; training from one cannot."""
    if ckpt_path and ckpt_path not in CKPT_KEYWORDS and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path: no checkpoint file at {ckpt_path!r}")


def run_checkpoint_folders(cfg: Any) -> tuple[Path, list[Path]]:
    """The run's ``last.ckpt`` (``callbacks.checkpoint_last``, else
    ``<paths.output_dir>/checkpoints/last.ckpt``) and every folder its callbacks write
    checkpoints into (each configured callback's ``dirpath``, and that default folder)."""
    default = Path(str(cfg.paths.output_dir)) / "checkpoints"
    last = default / "last.ckpt"
    folders = [default]
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or not node.get("dirpath"):
            continue
        folders.append(Path(str(node.dirpath)))
        if name == "checkpoint_last":
            last = Path(str(node.dirpath)) / f"{node.get('filename') or 'last'}.ckpt"
    return last, list(dict.fromkeys(folders))


def resolve_run_checkpoint(cfg: Any) -> str | None:
    """The checkpoint this run resumes from: ``cfg.ckpt_path``, or for ``ckpt_path=auto`` the run
    folder's ``last.ckpt`` when it exists (else ``None``: a fresh start). A fresh start into a
    checkpoint folder that already holds ``*.ckpt`` files raises ``ConfigError`` (one line):
    training would overwrite them."""
    path = cfg.get("ckpt_path")
    last, folders = run_checkpoint_folders(cfg)
    if path == AUTO:
        if last.is_file():
            log.info("ckpt_path=auto: resuming from %s", last)
            return str(last)
        path = None
    if path:
        return str(path)
    if (cfg.get("trainer") or {}).get("fast_dev_run"):  # writes no checkpoint
        return None
    found = sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt"))
    if found:
        resume = "ckpt_path=auto" if last.is_file() else f"ckpt_path={str(found[-1])!r}"
        raise ConfigError(
            f"the run folder already holds checkpoints ({', '.join(str(p) for p in found[:3])}"
            f"{', ...' if len(found) > 3 else ''}); a fresh run would overwrite them: resume "
            f"with {resume}, or choose another hydra.run.dir"
        )
    return None
