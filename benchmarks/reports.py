"""Regenerate every committed benchmark report from the committed raw runs (``make reports``).

Each study's raw runs are in ``benchmarks/runs/<study>/`` (``_archive.py``: overrides, config,
metrics, kNN curve; a few KB each); its report is ``cld-report`` with the options below, written
to ``benchmarks/results/<study>/`` (and ``.../balanced_protocol/`` for the class-balanced kNN).
A study whose raw runs are not committed is listed as missing, never silently kept; a study
whose rerun is still being committed, or is complete but not yet swapped in (``IN_PROGRESS.json``
in its folder), is listed with its progress and keeps its earlier report until the file goes.

    python benchmarks/reports.py [--only STUDY ...] [--check]

``--check`` regenerates into a temporary folder and exits 1 when a committed ``report.json`` or
``report.md`` differs (tests/report/test_committed_reports.py runs it on the small study).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("benchmarks/runs")  # relative to ROOT: report.json records the folder as given
RESULTS = Path("benchmarks/results")

WCP_DATA = ["data.dataset", "data.imbalance_ratio", "data.copies", "data.max_train_samples"]
WCP = [
    "--label", "method._target_", "cld.enabled", *WCP_DATA,
    "--select-within", *WCP_DATA,
    "--pair", "cld.enabled", "--pair-score", "rankme",
]  # fmt: skip
SWEEP = [
    "--label", "cld.weight", "cld.num_clusters", "cld.temperature", "method.lr", "cld.head",
    "--pair", "cld.weight", "--pair-score", "rankme",
]  # fmt: skip
BALANCED = ["--target", "knn/balanced_top1"]

#: study -> [(output subfolder, cld-report options)]
STUDIES: dict[str, list[tuple[str, list[str]]]] = {
    "cld_pays_short": [("", WCP), ("balanced_protocol", [*BALANCED, *WCP])],
    "lt_protocol_2k": [("", WCP), ("balanced_protocol", [*BALANCED, *WCP])],
    "where_cld_pays": [("", WCP), ("balanced_protocol", [*BALANCED, *WCP])],
    **{
        f"selection_sweeps/{s}": [("", SWEEP), ("balanced_protocol", [*BALANCED, *SWEEP])]
        for s in ("balanced", "lt100", "subset4k")
    },
}
COMPARED = ("report.json", "report.md")


def report_command(study: str, options: list[str], out: Path) -> list[str]:
    """The ``cld-report`` call of one report (run from ROOT)."""
    return [
        sys.executable, "-m", "cld_lightning.report.cli", str(RUNS / study),
        "--out", str(out), "--wandb", "off", *options,
    ]  # fmt: skip


def regenerate(study: str, results: Path = RESULTS) -> list[Path]:
    """Write the study's reports under ``results/<study>``; returns their folders."""
    folders = []
    for sub, options in STUDIES[study]:
        out = results / study / sub if sub else results / study
        subprocess.run(report_command(study, options, out), cwd=ROOT, check=True)
        folders.append(out)
    return folders


def differences(study: str) -> list[str]:
    """The committed report files of ``study`` that a fresh regeneration does not reproduce."""
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        fresh = Path(tmp).relative_to(ROOT)
        regenerate(study, results=fresh)
        out = []
        for sub, _ in STUDIES[study]:
            for name in COMPARED:
                committed = ROOT / RESULTS / study / sub / name
                new = ROOT / fresh / study / sub / name
                if not committed.is_file() or not _same(committed, new, fresh):
                    out.append(str(committed.relative_to(ROOT)))
        return out


def _same(committed: Path, new: Path, fresh: Path) -> bool:
    """Equal once the temporary output folder's name is read as the committed one."""
    text = new.read_text().replace(str(fresh), str(RESULTS))
    return committed.read_text() == text


#: a rerun's raw runs are committed as they finish, with this file in the study's folder until
#: its report is swapped in: {"expected_runs": N, "command": "...", "started": "YYYY-MM-DD"}
IN_PROGRESS = "IN_PROGRESS.json"


def rerun_in_progress(study_dir: Path) -> str | None:
    """A one-line status when ``study_dir`` holds a rerun still in progress (its committed
    report is then the earlier study's and is not regenerated from a partial set), else None."""
    marker = study_dir / IN_PROGRESS
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    done = sum(1 for run in study_dir.iterdir() if (run / "metrics.json").is_file())
    stage = "rerun in progress" if done < info["expected_runs"] else "rerun not swapped in yet"
    return (
        f"{stage}: {done} of {info['expected_runs']} raw runs committed "
        f"({info.get('command', 'command not recorded')}); report not regenerated"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(STUDIES), default=sorted(STUDIES))
    p.add_argument("--check", action="store_true", help="compare, do not write")
    args = p.parse_args()
    missing = [s for s in args.only if not (ROOT / RUNS / s).is_dir()]
    for study in missing:
        print(f"reports: {RUNS / study}: raw runs not committed; report not regenerated")
    todo = []
    for study in (s for s in args.only if s not in missing):
        status = rerun_in_progress(ROOT / RUNS / study)
        if status:
            print(f"reports: {RUNS / study}: {status}")
        else:
            todo.append(study)
    if args.check:
        diff = [f for s in todo for f in differences(s)]
        for f in diff:
            print(f"reports: {f} differs from its regeneration")
        return 1 if diff else 0
    for study in todo:
        for folder in regenerate(study):
            print(f"reports: {folder} regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
