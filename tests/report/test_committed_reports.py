"""Committed reports regenerate from the committed raw runs (issue 28 item 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "reports.py"
STUDY = "cld_pays_short"  # the small committed study: 6 runs of 300 steps


def test_small_committed_report_regenerates_without_a_difference() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--only", STUDY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "differs" not in out.stdout


def test_committed_raw_runs_are_small_and_complete() -> None:
    runs = sorted(p for p in (ROOT / "benchmarks" / "runs" / STUDY).iterdir() if p.is_dir())
    assert len(runs) == 6
    for run in runs:
        names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
        assert {".hydra/overrides.yaml", ".hydra/config.yaml", "metrics.json"} <= names
        assert "knn_curve.csv" in names and not any(n.endswith(".ckpt") for n in names)
        assert sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) < 64_000
    report = json.loads((ROOT / "benchmarks/results" / STUDY / "report.json").read_text())
    assert report["runs"] == 6 and report["finished"] == 6


def test_check_fails_when_a_committed_report_was_edited_by_hand(tmp_path: Path) -> None:
    """The comparison is not vacuous: a hand-edited figure is found."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import reports
    finally:
        sys.path.pop(0)
    committed = ROOT / "benchmarks/results" / STUDY / "report.md"
    edited = tmp_path / "report.md"
    edited.write_text(committed.read_text().replace("75.40", "76.40", 1))
    assert "75.40" in committed.read_text()
    assert not reports._same(edited, committed, Path("benchmarks/results"))
    assert reports._same(committed, committed, Path("benchmarks/results"))


def test_a_rerun_in_progress_is_named_and_not_regenerated(tmp_path: Path) -> None:
    """Raw runs are committed as they finish: until the marker goes, the study's earlier report
    stays and `make reports` says how far the rerun is."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from reports import IN_PROGRESS, rerun_in_progress
    finally:
        sys.path.pop(0)
    study = tmp_path / "sweep"
    for name in ("r00", "r01", "r02"):
        (study / name).mkdir(parents=True)
    (study / "r00" / "metrics.json").write_text("{}")
    (study / "r01" / "metrics.json").write_text("{}")
    assert rerun_in_progress(study) is None  # no marker: a finished study, regenerated
    (study / IN_PROGRESS).write_text(json.dumps({"expected_runs": 20, "command": "make x"}))
    status = rerun_in_progress(study)
    assert (
        status == "rerun in progress: 2 of 20 raw runs committed (make x); report not regenerated"
    )
    (study / IN_PROGRESS).write_text(json.dumps({"expected_runs": 2, "command": "make x"}))
    assert rerun_in_progress(study).startswith("rerun not swapped in yet: 2 of 2 raw runs")


def test_queue_does_not_rerun_a_committed_raw_run(tmp_path: Path) -> None:
    """A rerun spread over sessions: runs whose raw run is already committed are skipped (no
    `cld-train` starts), the others are queued."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))  # for its own `from _archive import ...`
    try:  # by path: the standard library has a `_queue` module too, imported already
        spec = importlib.util.spec_from_file_location("bench_queue", ROOT / "benchmarks/_queue.py")
        _queue = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_queue)
    finally:
        sys.path.pop(0)
    runs_root = tmp_path / "runs"
    (runs_root / "study" / "r00").mkdir(parents=True)
    (runs_root / "study" / "r00" / "metrics.json").write_text("{}")
    started: list[str] = []

    class NoRun:  # records what would start; finishes at once
        def __init__(self, key, overrides, work, threads) -> None:
            started.append(key)
            self.key, self.start = key, 0.0
            self.proc = type("P", (), {"poll": staticmethod(lambda: 1)})()

    real = _queue.Run
    _queue.Run = NoRun
    try:
        _queue.run_queue(
            [("r00", []), ("r01", [])],
            tmp_path / "work",
            poll=0.0,
            study="study",
            runs_root=runs_root,
        )
    finally:
        _queue.Run = real
    index = json.loads((tmp_path / "work" / "queue.json").read_text())
    assert started == ["r01"]
    assert index["r00"]["status"] == "archived" and index["r01"]["status"] == "failed (1)"
