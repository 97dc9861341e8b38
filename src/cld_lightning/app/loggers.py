"""Loggers that never block: W&B goes offline by itself without credentials or network."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

WANDB_HOST = ("api.wandb.ai", 443)


def wandb_has_credentials() -> bool:
    """An API key in the environment or a ``~/.netrc`` entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def network_reachable(host: tuple[str, int] | None = None, timeout: float = 2.0) -> bool:
    """One TCP connect with a short timeout (DNS failure or refusal -> False); ``host`` defaults
    to the module's ``WANDB_HOST``, read at call time."""
    try:
        with socket.create_connection(host or WANDB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(requested: str | None = None) -> str:
    """``online`` only with credentials and a reachable host; ``WANDB_MODE`` wins if set."""
    env = os.environ.get("WANDB_MODE")
    if env is not None and env not in ("online", "offline", "disabled", "dryrun", "run"):
        os.environ.pop("WANDB_MODE")  # an empty/invalid value would crash wandb.init
        env = None
    if env in ("offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    if requested in ("offline", "disabled"):
        return requested
    if not wandb_has_credentials() or not network_reachable():
        return "offline"
    return "online"


def hydra_job_info() -> dict[str, Any]:
    """Multirun facts from Hydra, if running under it: sweep folder name, job number, overrides."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except Exception:  # not under Hydra (scripts, tests)
        return {}
    mode = str(getattr(hc, "mode", ""))
    info: dict[str, Any] = {"multirun": mode.endswith("MULTIRUN")}
    if info["multirun"]:
        info["sweep"] = Path(str(hc.sweep.dir)).name
        info["job_num"] = int(hc.job.num)
        info["overrides"] = list(hc.overrides.task)
    return info


def make_wandb_logger(
    project: str = "cld-lightning",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    save_dir: str = ".",
    mode: str | None = None,
    log_model: bool = False,
    entity: str | None = None,
    job_type: str = "train",
    config: dict[str, Any] | None = None,
) -> Any:
    """A ``WandbLogger`` whose mode is chosen by :func:`resolve_wandb_mode` (never hangs)."""
    from pytorch_lightning.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    job = hydra_job_info()
    if job.get("multirun"):  # the jobs of one multirun form one W&B group
        group = f"{group or project}-{job['sweep']}"
        name = f"{name or 'job'}-{job['job_num']}"
        tags = [*(tags or []), "multirun"]
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        name=name,
        group=group,
        tags=list(tags or []),
        save_dir=save_dir,
        mode=resolved,
        log_model=log_model,
        entity=entity,
        job_type=job_type,
        config=config,
        reinit="finish_previous",
    )
    logger.resolved_mode = resolved  # type: ignore[attr-defined]
    return logger
