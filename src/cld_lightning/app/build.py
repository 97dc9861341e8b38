"""Model building shared by ``cld-train`` and ``cld-eval``: data facts -> backbone -> method.

``cld-train`` takes the facts from the datamodule it sets up; ``cld-eval`` from the
``cld_lightning_meta`` stored in the checkpoint (the same dict, see :func:`data_meta`), so a
checkpoint's module is rebuilt exactly as it was trained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import hydra
import torch

from cld_lightning.app.config_check import accepted_keys
from cld_lightning.app.device_choice import (
    Choice,
    DeviceFacts,
    choose_channels_last,
    probe_device,
    requested_layout,
    risky_convs,
)
from cld_lightning.app.errors import ConfigError
from cld_lightning.cld.config import CLDConfig


def data_meta(datamodule: Any) -> dict[str, int]:
    """What the model needs from the data (set up): stored in checkpoints as ``cld_lightning_meta``."""
    return {
        "in_channels": int(datamodule.in_channels),
        "num_train_samples": int(datamodule.num_train_samples),
        "num_classes": int(datamodule.num_classes),
        "image_size": int(datamodule.image_size),
    }


def method_config(method: Mapping[str, Any]) -> dict[str, Any]:
    """A ``method`` config as a plain dict, with the legacy argument names of its target
    migrated (:mod:`cld_lightning.methods.legacy`: configs stored in checkpoints of earlier versions;
    ``cld-train`` refuses them in new configs, see ``config_check``)."""
    from omegaconf import DictConfig, OmegaConf

    plain = (
        OmegaConf.to_container(method, resolve=True)
        if isinstance(method, DictConfig)
        else dict(method)
    )
    target = _target_class(plain)
    migrate = getattr(target, "migrate_arguments", None)
    if migrate is None:
        return plain  # type: ignore[return-value]
    return {
        "_target_": plain["_target_"],
        **migrate({k: v for k, v in plain.items() if k != "_target_"}),
    }


def _target_class(node: Mapping[str, Any]) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(str(node["_target_"]))
    except Exception:  # noqa: BLE001 (instantiate reports a bad target with its own message)
        return None


def takes_num_samples(method: Mapping[str, Any]) -> bool:
    """Whether the method's constructor takes ``num_samples`` (NPID's memory-bank rows; a
    constructor with an unresolved ``**kwargs`` may); cld-train passes the data set size only to
    those."""
    target = _target_class(method)
    if target is None:
        return False
    names, open_ended = accepted_keys(target)
    return "num_samples" in names or open_ended


def build_model(
    method: Mapping[str, Any],
    backbone: Mapping[str, Any],
    cld: CLDConfig | Mapping[str, Any] | None,
    meta: Mapping[str, int],
    facts: DeviceFacts | None = None,
) -> Any:
    """Instantiate ``backbone`` (``in_channels`` from ``meta``), then ``method`` with that backbone,
    ``num_classes`` (and ``num_samples`` for a method that takes it, :func:`takes_num_samples`)
    from ``meta`` and the validated ``cld`` settings; the memory layout as
    :func:`build_model_and_layout` decides it."""
    return build_model_and_layout(method, backbone, cld, meta, facts)[0]


def build_layout_backbone(
    method: Mapping[str, Any],
    backbone: Mapping[str, Any],
    in_channels: int,
    facts: DeviceFacts | None = None,
) -> tuple[Any, Choice]:
    """The backbone in the memory layout chosen for ``facts`` (default: this machine's CPU) from
    ``backbone.channels_last`` and ``method.channels_last`` (``auto``, true, false; see
    :func:`~cld_lightning.app.device_choice.choose_channels_last`): built NCHW, its convolutions
    checked, then converted. Without either key nothing is decided (``Choice(None, ...)``)."""
    keys = []
    for group, node in (("backbone", backbone), ("method", method)):
        if "channels_last" in node:
            value = node.get("channels_last")
            if not (isinstance(value, bool) or value == "auto"):
                raise ConfigError(
                    f"{group}.channels_last must be true, false or auto, got {value!r}"
                )
            keys.append(value)
    kw: dict[str, Any] = {"in_channels": in_channels}
    if "channels_last" in backbone:
        kw["channels_last"] = False
    net = hydra.utils.instantiate(backbone, **kw)
    if not keys:
        return net, Choice(None, None, "no channels_last key in backbone or method")
    layout = choose_channels_last(
        requested_layout(*keys), facts or probe_device("cpu"), risky_convs(net)
    )
    if layout.value:
        net = net.to(memory_format=torch.channels_last)
    return net, layout


def build_model_and_layout(
    method: Mapping[str, Any],
    backbone: Mapping[str, Any],
    cld: CLDConfig | Mapping[str, Any] | None,
    meta: Mapping[str, int],
    facts: DeviceFacts | None = None,
) -> tuple[Any, Choice]:
    """:func:`build_model`, and the memory-layout :class:`Choice` (from
    :func:`build_layout_backbone`): its value replaces ``method.channels_last``."""
    net, layout = build_layout_backbone(method, backbone, meta["in_channels"], facts)
    method = method_config(method)
    if "channels_last" in method:
        method["channels_last"] = bool(layout.value)
    num_classes = meta.get("num_classes")
    # the data set's class count goes to the constructor, so checkpoints' hyper_parameters hold it
    data_kw: dict[str, int] = (
        {"num_classes": int(num_classes)}
        if num_classes is not None and "num_classes" in method
        else {}
    )
    if takes_num_samples(method):
        data_kw["num_samples"] = int(meta["num_train_samples"])
    model = hydra.utils.instantiate(
        method,
        backbone=net,
        cld=CLDConfig.from_any(cld),  # type: ignore[arg-type]
        **data_kw,
        _convert_="all",
    )
    if num_classes is not None and getattr(model, "num_classes", None) != num_classes:
        model.num_classes = num_classes
    return model, layout


def local_rank() -> int:
    """This process's rank on its node, from the launcher's environment (0 when not launched)."""
    for var in ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def prepare_data_once(datamodule: Any) -> None:
    """``prepare_data`` (downloads) on local rank 0 only, as Lightning's ``prepare_data_per_node``.

    cld-train needs the data set's size before the Trainer exists, so it calls the hooks itself.
    Lightning's DDP launcher starts the other ranks after this ran; processes started together
    (torchrun, srun) expect the data in place: download it once beforehand.
    """
    if local_rank() == 0:
        datamodule.prepare_data()


def build_datamodule(data: Mapping[str, Any], local_rank_zero_prepares: bool = True) -> Any:
    """Instantiate the ``data`` config, ``prepare_data`` (on local rank 0 only, unless
    ``local_rank_zero_prepares`` is False), ``setup("fit")``: its facts are then known."""
    datamodule = hydra.utils.instantiate(data, _convert_="all")
    if local_rank_zero_prepares:
        prepare_data_once(datamodule)
    else:
        datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule
