"""Exceptions raised by the data layer; each message names the path/key and what was expected."""

from __future__ import annotations

import re
from pathlib import Path


class DataError(Exception):
    """Base of the data layer's errors (``cld-train``/``cld-eval`` print them as one line)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The data set files are not where we looked (message lists every path tried and a fix)."""

    def __init__(self, name: str, tried: list[Path] | list[str], how_to_get: str) -> None:
        paths = "\n".join(f"  - {p}" for p in tried)
        super().__init__(
            f"{name}: data not found. Paths tried:\n{paths}\nHow to get the data: {how_to_get}"
        )
        self.tried = [Path(p) for p in tried]
        self.summary = (
            f"{name}: data not found at {', '.join(str(p) for p in tried)}; "
            f"how to get the data: {how_to_get}"
        )


class DataLayoutError(DataError, ValueError):
    """Files exist but are not laid out as expected."""


class CorruptImageError(DataError, OSError):
    """An image file could not be decoded."""

    def __init__(self, path: str | Path, cause: BaseException | None = None) -> None:
        if cause is None and "\nOriginal Traceback" in str(path):  # re-raised by a DataLoader
            super().__init__(str(path))  # worker: the worker's message, unchanged
            found = re.findall(r"unreadable image file: (.+?)(?: \(\w+: |\. Remove)", str(path))
            self.path = Path(found[-1] if found else "")
            return
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        super().__init__(
            f"corrupt or unreadable image file: {path}{detail}. Remove or replace it, or set "
            "data.skip_corrupt=true to verify all images at setup and skip the bad ones."
        )
        self.path = Path(path)


class DataSizeError(DataError, ValueError):
    """The data set is too small for the settings (a batch larger than it, classes emptied)."""
