"""A resumable queue of `cld-train` runs for the long CPU benchmarks (2 at a time, 1 thread each).

Each run gets its own folder ``WORK/<key>`` (Hydra's run dir: ``.hydra/``, ``csv/``,
``checkpoints/last.ckpt``, ``metrics.json``). A run with ``metrics.json`` is done and skipped; an
interrupted one continues from its ``checkpoints/last.ckpt`` (exact resume). The JSON index
``WORK/queue.json`` lists every run's command and status; the tables come from ``cld-report WORK``.
Each finished run's raw files (overrides, config, metrics, kNN curve: a few KB) are copied into
``benchmarks/runs/<study>/<key>`` (``_archive.py``), the folder that is committed and that
``make reports`` regenerates the tables from.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _archive import RUNS, archive_run

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "plots.enabled=false",
    "callbacks.checkpoint.save_top_k=0",
]


class Run:
    """One `cld-train` subprocess in ``work/key``."""

    def __init__(self, key: str, overrides: list[str], work: Path, threads: int) -> None:
        self.key, self.overrides = key, overrides
        self.dir = work / key
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [*overrides, *COMMON, f"hydra.run.dir={self.dir}"]
        last = self.dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            args.append(f"ckpt_path={last}")
        env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(threads)}
        self.log = (work / f"{key}.log").open("a")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cld_lightning.app.train", *args],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def run_queue(
    plan: list[tuple[str, list[str]]],
    work: Path,
    parallel: int = 2,
    threads: int = 1,
    poll: float = 20.0,
    on_progress=None,
    study: str | None = None,
    runs_root: Path = RUNS,
) -> None:
    """Run ``plan`` ([(key, overrides)], in order) ``parallel`` at a time; resumable. With
    ``study``, every finished run is archived into ``<runs_root>/<study>/<key>``
    (``benchmarks/runs``), and a run already archived there (committed by an earlier session,
    perhaps on another machine) is not run again."""

    def keep(key: str) -> None:
        if study is not None and (work / key / "metrics.json").is_file():
            archive_run(work / key, runs_root / study / key)

    work = work.resolve()  # the runs start in ROOT: a relative WORK must not move with them
    work.mkdir(parents=True, exist_ok=True)
    index_path = work / "queue.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    todo = []
    for key, overrides in plan:
        index.setdefault(key, {})["command"] = "cld-train " + shlex.join(overrides)
        if (work / key / "metrics.json").is_file():
            index[key]["status"] = "done"
            keep(key)
        elif study is not None and (runs_root / study / key / "metrics.json").is_file():
            index[key]["status"] = "archived"  # its raw run is committed: not run again
        else:
            todo.append((key, overrides))
    running: list[Run] = []

    def save() -> None:
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        tmp.replace(index_path)

    while todo or running:
        while todo and len(running) < parallel:
            key, overrides = todo.pop(0)
            running.append(Run(key, overrides, work, threads))
            index[key]["status"] = "running"
            save()
        time.sleep(poll)
        still = []
        for r in running:
            code = r.proc.poll()
            if code is None:
                still.append(r)
                continue
            wall = round(time.perf_counter() - r.start, 1)
            index[r.key]["wall_s"] = index[r.key].get("wall_s", 0) + wall
            index[r.key]["status"] = "done" if code == 0 else f"failed ({code})"
            save()
            keep(r.key)
            if on_progress is not None:
                on_progress()
        running = still
    save()
