"""Every rank destroys its process group at exit: a gloo group left alive can abort (SIGABRT) a
rank that exits before its peers, which is how ``ddp_spawn`` runs end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cld_lightning.modules import distributed
from tests.distributed.helpers import script_env

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    script = Path(__file__).with_name("exit_script.py")
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=script_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_setup_registers_one_exit_hook_that_destroys_the_group() -> None:
    proc = _run("hook", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split()
    assert lines == ["registered=True", "destroyed"]  # once, after the script's last line


def test_no_process_group_registers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "_exit_hook_registered", False)
    registered = []
    monkeypatch.setattr(distributed.atexit, "register", registered.append)
    distributed.destroy_process_group_at_exit()
    assert registered == [] and distributed._exit_hook_registered is False


@pytest.mark.slow
def test_ranks_that_exit_first_do_not_abort() -> None:
    """40 two-rank spawns with rank 0 lingering: without the hook about 1 in 15 aborted (2.14,
    2 CPU cores), so all 40 passing without it would happen about 6 % of the time."""
    proc = _run("stress", "40", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"spawns": 40, "aborted": 0}, proc.stderr[-3000:]
