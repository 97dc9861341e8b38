"""Reading run folders: one ``cld-train`` run = a folder with ``.hydra/overrides.yaml`` and, once
finished, ``metrics.json``; a multirun folder holds one such folder per job."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml


class ReportInputError(ValueError):
    """A folder that holds no run, or a run file that cannot be read (names the file)."""


@dataclass
class RunRecord:
    """One run: its folder, task overrides, final metrics (empty while unfinished) and the
    ``(optimiser step, value)`` rows of every logged validation metric."""

    path: Path
    overrides: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    logged_to_wandb: bool = False

    @cached_property
    def config(self) -> dict | None:
        """The run's composed config (``.hydra/config.yaml``), read once; ``None`` when the file
        is missing or not a YAML mapping."""
        try:
            node = yaml.safe_load((self.path / ".hydra" / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
        return node if isinstance(node, dict) else None

    def config_value(self, dotted: str) -> object:
        """A value of the run's composed config, e.g. ``cld.enabled``; ``None`` when the file or
        the key is missing."""
        node: object = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def finished(self) -> bool:
        return bool(self.metrics)

    @property
    def seed(self) -> str | None:
        for o in self.overrides:
            if o.startswith("seed="):
                return o.split("=", 1)[1]
        return None


def _read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise ReportInputError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, list):
        raise ReportInputError(f"{path}: expected a list of overrides, got {type(data).__name__}")
    return [str(o) for o in data]


def _read_metrics(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected an object of metrics")
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


#: the kNN curve of an archived run (``benchmarks/_archive.py``: ``step`` + ``knn/*`` columns)
ARCHIVED_CURVE = "knn_curve.csv"


def _read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Validation rows (``knn/*``) of every CSV logger version, by step (a resumed run logs to a
    new ``version_N``; a later version's value wins at a step); an archived run's
    ``knn_curve.csv`` when it has no logger folder."""
    by_name: dict[str, dict[int, float]] = {}
    paths = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    if not paths and (run_dir / ARCHIVED_CURVE).is_file():
        paths = [run_dir / ARCHIVED_CURVE]
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                if not step:
                    continue
                for name, value in row.items():
                    if name and name.startswith("knn/") and value not in (None, ""):
                        v = float(value)
                        if math.isfinite(v):
                            by_name.setdefault(name, {})[int(float(step))] = v
    return {name: sorted(rows.items()) for name, rows in by_name.items()}


def find_runs(root: str | Path) -> list[RunRecord]:
    """Every run below ``root`` (a multirun, a folder of runs, or one run), sorted by path.

    A run is a folder holding ``.hydra/overrides.yaml`` or ``metrics.json``; unfinished runs are
    returned too (no metrics, curves so far)."""
    root = Path(root)
    if not root.is_dir():
        raise ReportInputError(f"{root}: not a folder (expected a multirun or a folder of runs)")
    dirs = {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    dirs |= {p.parent for p in root.rglob("metrics.json")}
    runs = [
        RunRecord(
            path=d,
            overrides=_read_overrides(d),
            metrics=_read_metrics(d),
            curves=_read_curves(d),
            logged_to_wandb=(d / "wandb").is_dir(),
        )
        for d in sorted(dirs)
    ]
    if not runs:
        raise ReportInputError(
            f"{root}: no run found (a run folder holds .hydra/overrides.yaml or metrics.json)"
        )
    return runs
