"""Fixtures: one 2-process gloo spawn shared by the DDP-vs-single-process tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.helpers import ddp_worker, spawn


@pytest.fixture(scope="session")
def ddp_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    spawn(ddp_worker, str(out))
    return out
