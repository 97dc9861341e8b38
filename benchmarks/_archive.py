"""Raw runs kept in git: the few KB of a finished `cld-train` run that every benchmark table needs.

A run folder (``outputs/<study>/<key>``) holds checkpoints and logs of many MB; what a table is
computed from is small. :func:`archive_run` copies it into ``benchmarks/runs/<study>/<key>/``:

- ``.hydra/overrides.yaml`` and ``.hydra/config.yaml`` (the task's overrides, the composed config),
- ``metrics.json`` (final metrics) and ``verdict.json`` when the run wrote one,
- ``knn_curve.csv``: the validation (``knn/*``) rows of every CSV-logger version, by optimiser step.

``cld-report benchmarks/runs/<study>`` reads these folders as it reads the originals (the curve from
``knn_curve.csv``), so ``make reports`` regenerates every committed ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs"
KEPT = (".hydra/overrides.yaml", ".hydra/config.yaml", "metrics.json", "verdict.json")
CURVE = "knn_curve.csv"


def knn_rows(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of the ``knn/*`` values by step over every CSV-logger version of a run
    (a resumed run logs to a new ``version_N``; a later version's value wins at a step)."""
    by_step: dict[int, dict[str, str]] = {}
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("step"):
                    continue
                values = {
                    k: v
                    for k, v in row.items()
                    if k and k.startswith("knn/") and v not in (None, "")
                }
                if values:
                    by_step.setdefault(int(float(row["step"])), {}).update(values)
    columns = sorted({k for values in by_step.values() for k in values})
    rows = [{"step": str(step), **by_step[step]} for step in sorted(by_step)]
    return ["step", *columns], rows


def archive_run(run_dir: Path, dest: Path) -> Path:
    """Copy the raw files of a finished run ``run_dir`` into ``dest`` (created; old files
    replaced). Raises ``FileNotFoundError`` naming the file when the run has no metrics.json."""
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'metrics.json'}: the run has not finished")
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        src = run_dir / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)
    columns, rows = knn_rows(run_dir)
    if rows:
        tmp = dest / (CURVE + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(dest / CURVE)
    return dest


def archive_study(work: Path, study: str, runs: Path = RUNS) -> list[Path]:
    """Archive every finished run folder directly under ``work`` into ``runs/<study>/``."""
    return [
        archive_run(d, runs / study / d.name)
        for d in sorted(p for p in work.iterdir() if p.is_dir())
        if (d / "metrics.json").is_file()
    ]
