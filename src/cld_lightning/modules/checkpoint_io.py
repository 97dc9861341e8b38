"""Reading and writing checkpoint files safely: the one checkpoint reader of the project.

- :func:`load_checkpoint`: ``torch.load`` with ``weights_only=True`` (tensors, numbers, strings and
  containers only; nothing in the file can run code). The config records older checkpoints of this
  project hold (:data:`RECORD_GLOBALS`, e.g. a ``CLDConfig`` among the hyper-parameters) come back
  as plain dicts. A file that needs full unpickling is refused with
  :class:`UntrustedCheckpointError`, one line naming the file, what it holds and the opt-in
  (``trust=True``) for files the user trusts.
- :func:`check_stored_targets`: the config stored in a ``cld-train`` checkpoint names only this
  project's classes before anything instantiates it.
- :func:`atomic_write`: write a file through a temporary file in the same folder (flushed,
  ``fsync``-ed, then renamed over the target): a failed write leaves the previous file intact.
- :func:`atomic_save`: ``torch.save`` through :func:`atomic_write`.

Plain PyTorch (layer 0: no Lightning, no project imports); ``app`` wraps the saver in a Lightning
``CheckpointIO`` plugin and ``methods`` loads with it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

#: classes that older checkpoints of this project pickled among their (hyper-parameter) configs:
#: loaded as a plain ``dict`` of their fields (never constructed, no code of theirs runs)
RECORD_GLOBALS = ("cld_lightning.cld.config.CLDConfig",)

#: what a stored config's ``_target_`` may name without ``trust`` (this project's builders)
TARGET_PREFIXES = ("cld_lightning.models.", "cld_lightning.methods.", "cld_lightning.data.")

#: the opt-in named in the refusal (``cld-train`` / ``cld-eval`` key, Python keyword)
TRUST_HINT = (
    "If you trust this file, load it with trust_checkpoint=true (cld-train, cld-eval) or "
    "trust_checkpoint=True (Python API)"
)


class UntrustedCheckpointError(ValueError):
    """A checkpoint that holds objects beyond tensors and containers (loading them could run code
    hidden in the file); its message is one line naming the file and the opt-in."""


class _Record(dict):
    """Stand-in for a :data:`RECORD_GLOBALS` class: its pickled fields, as a dict."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"record state must be a dict, got {type(state).__name__}")
        self.update(state)


def _plain(node: Any) -> Any:
    """``node`` with every :class:`_Record` turned into a plain ``dict`` (containers in place)."""
    if isinstance(node, _Record):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, dict):  # dict, OrderedDict: keep the type
        for key, value in node.items():
            if isinstance(value, dict | list | tuple):
                node[key] = _plain(value)
        return node
    if isinstance(node, list):
        node[:] = [_plain(v) for v in node]
        return node
    if type(node) is tuple:
        return tuple(_plain(v) for v in node)
    return node


def safe_globals() -> list[Any]:
    """The allow-list handed to ``torch.serialization.safe_globals`` (records as plain dicts)."""
    return [(_Record, name) for name in RECORD_GLOBALS]


def _what_it_holds(err: BaseException) -> str:
    """The object the weights-only reader refused (``GLOBAL x.y``), from torch's message."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"got <class '([\w.]+)'>", text)
    if found:
        return found.group(1)
    lines = [ln.strip() for ln in text.splitlines() if "WeightsUnpickler error" in ln]
    return lines[0].split(":", 1)[-1].strip()[:120] if lines else "objects beyond tensors"


def load_checkpoint(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    trust: bool = False,
    map_location: Any = "cpu",
    mmap: bool | None = None,
) -> Any:
    """``torch.load`` a checkpoint safely (``weights_only=True`` with :func:`safe_globals`).

    ``trust=True`` unpickles everything (only for files you trust: unpickling can run code).
    ``mmap`` (default: for paths) memory-maps the file; files of the legacy (non-zip) format are
    re-read without it. Raises :class:`UntrustedCheckpointError` for a file that needs full
    unpickling; other read errors (no file, truncated) propagate.
    """
    name = str(source) if isinstance(source, str | os.PathLike) else getattr(source, "name", "")
    use_mmap = isinstance(source, str | os.PathLike) if mmap is None else mmap

    def read(memory_map: bool) -> Any:
        if trust:
            return torch.load(
                source, map_location=map_location, weights_only=False, mmap=memory_map
            )
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(source, map_location=map_location, weights_only=True, mmap=memory_map)

    try:
        try:
            loaded = read(use_mmap)
        except RuntimeError as err:
            if not use_mmap or "mmap" not in str(err):  # only legacy-format files need a retry
                raise
            loaded = read(False)
    except pickle.UnpicklingError as err:
        if trust or "Weights only load failed" not in str(err):
            raise
        raise UntrustedCheckpointError(
            f"{name or 'checkpoint'!r} holds {_what_it_holds(err)}, which only full unpickling "
            f"can load, and unpickling can run code hidden in the file; refused. {TRUST_HINT}"
        ) from None
    return _plain(loaded)


def check_stored_targets(
    config: Any, groups: tuple[str, ...], source: Any, trust: bool = False
) -> None:
    """A stored (``cld_lightning_config``) config is data until Hydra instantiates it: every
    ``_target_`` under ``config[group]`` must name a class of this project
    (:data:`TARGET_PREFIXES`), else :class:`UntrustedCheckpointError` (one line naming the file,
    the key and the opt-in). ``trust=True`` accepts any target."""
    if trust or not isinstance(config, dict):
        return

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(TARGET_PREFIXES):
                raise UntrustedCheckpointError(
                    f"{str(source)!r} asks to build {key}._target_={str(target)!r}, not a class "
                    f"of cld_lightning ({', '.join(TARGET_PREFIXES)}); building it could run any "
                    f"code; refused. {TRUST_HINT}"
                )
            for k, v in node.items():
                walk(v, f"{key}.{k}")
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")

    for group in groups:
        walk(config.get(group), group)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened/synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(file)`` on a temporary file in the same folder, flushed and
    ``fsync``-ed, then renamed over ``path`` (``os.replace``). Whatever fails on the way (a full
    disk, an exception in ``write``, a signal), ``path`` keeps its previous content and the
    temporary file is removed. Returns ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


__all__ = [
    "RECORD_GLOBALS",
    "UntrustedCheckpointError",
    "atomic_save",
    "atomic_write",
    "check_stored_targets",
    "load_checkpoint",
    "safe_globals",
]
