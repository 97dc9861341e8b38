"""Shared helpers for the data-layer tests (tiny generated data sets in tmp_path)."""

from __future__ import annotations

import pytest

from cld_lightning.data import SSLDataModule


@pytest.fixture
def make_dm():
    """Build + set up an SSLDataModule with test-friendly defaults (no workers, no download)."""

    def _make(dataset: str, root, **kw) -> SSLDataModule:
        kw.setdefault("batch_size", 4)
        kw.setdefault("num_workers", 0)
        kw.setdefault("download", False)
        dm = SSLDataModule(dataset=dataset, root=str(root), **kw)
        dm.setup("fit")
        return dm

    return _make
