"""``cld-report <multirun or runs folder>``: what a sweep found, in one page.

Writes into ``--out`` (default ``<folder>/report``): ``report.md`` (the tables), ``report.json``
(every figure), ``curves.png`` (kNN top-1 against optimiser steps, mean over seeds, with the
baselines; needs the ``[plots]`` extra) and, when the runs were logged to W&B (or ``--wandb`` asks
for it), the same tables in a W&B run of ``job_type="report"`` (offline without credentials or
network, never blocking).

With ``--pair KEY`` every seed-matched comparison carries a 95 % paired t interval when it rests
on >= 2 seeds; ``--interval`` makes that a requirement (exit 2 when a comparison has one seed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cld_lightning.eval.selection import SCORES
from cld_lightning.report.curves import PLOTS_HINT, have_matplotlib, plot_curves
from cld_lightning.report.markdown import markdown
from cld_lightning.report.paired import paired_differences, without_interval
from cld_lightning.report.records import Report, to_json
from cld_lightning.report.runs import ReportInputError, RunRecord, find_runs
from cld_lightning.report.summary import (
    DEFAULT_SCORE,
    group_runs,
    selection_table,
    selection_within,
    summarize,
)


def build_report(
    root: Path,
    score: str = DEFAULT_SCORE,
    target: str = "knn/top1",
    label_keys: Sequence[str] = (),
    within_keys: Sequence[str] = (),
    pair_key: str | None = None,
    pair_score: str = DEFAULT_SCORE,
) -> tuple[list[RunRecord], Report]:
    """Every figure of the runs below ``root`` (run folders relative to ``root``)."""
    runs = find_runs(root)
    rows = summarize(runs, label_keys)
    for row in rows:  # run folders relative to the report's folder (the JSON travels)
        row.paths = [str(Path(p).relative_to(root)) for p in row.paths]
    report = Report(
        root=str(root),
        score=score,
        runs=len(runs),
        finished=sum(r.finished for r in runs),
        configs=rows,
        selection=selection_table(rows, target=target),
    )
    if within_keys:
        report.select_within = list(within_keys)
        report.selection_within = selection_within(rows, group_runs(runs), within_keys, target)
    if pair_key:
        report.paired = paired_differences(
            runs, pair_key, target, name_keys=label_keys, decide_by=pair_score
        )
    return runs, report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cld-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("folder", type=Path, help="a Hydra multirun folder or a folder of run folders")
    p.add_argument("--out", type=Path, default=None, help="where to write (default FOLDER/report)")
    p.add_argument(
        "--score",
        default=DEFAULT_SCORE,
        choices=SCORES,
        help=f"the label-free score whose pick is the default choice (default {DEFAULT_SCORE})",
    )
    p.add_argument(
        "--target", default=None, help="the labelled metric to compare against (knn/top1)"
    )
    p.add_argument(
        "--wandb",
        choices=("auto", "off", "offline", "online"),
        default="auto",
        help="auto: log to W&B when the runs were logged there",
    )
    p.add_argument(
        "--label",
        nargs="+",
        default=[],
        metavar="KEY",
        help="name configurations by these config keys (e.g. cld.enabled data.imbalance_ratio)",
    )
    p.add_argument(
        "--select-within",
        nargs="+",
        default=[],
        metavar="KEY",
        help="compare label-free scores only between runs with equal values of these config keys "
        "(e.g. data.dataset data.imbalance_ratio: one choice per data set)",
    )
    p.add_argument(
        "--pair",
        default=None,
        metavar="KEY",
        help="compare runs that differ only in this config key (e.g. cld.enabled), matched by "
        "seed: the change with its 95%% interval, and whether each label-free score moves with it",
    )
    p.add_argument(
        "--pair-score",
        default=DEFAULT_SCORE,
        choices=SCORES,
        help=f"the label-free score whose change decides between the two sides of a pair "
        f"(default {DEFAULT_SCORE}, as --score)",
    )
    p.add_argument(
        "--interval",
        action="store_true",
        help="require the 95%% interval for every --pair comparison: refuse (exit 2) when one "
        "rests on a single seed",
    )
    return p


def _has_key(config: object, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return False
        config = config[part]
    return True


def _unknown_key_error(runs: Sequence[RunRecord], args: argparse.Namespace) -> str | None:
    """One line for a ``--target`` no finished run has, or a ``--label`` / ``--select-within`` /
    ``--pair`` key in no run's composed config (runs without ``.hydra/config.yaml`` are not
    judged), else None."""
    finished = [r for r in runs if r.finished]
    asked = args.target is not None  # the default may be absent (runs on unlabelled data)
    args.target = args.target or "knn/top1"
    if asked and finished and not any(args.target in r.metrics for r in finished):
        have = sorted({k for r in finished for k in r.metrics if "/" in k})
        return f"--target {args.target}: no finished run has this metric; have: {', '.join(have)}"
    configs = [r.config for r in runs if r.config is not None]
    keys = [("--label", k) for k in args.label] + [
        ("--select-within", k) for k in args.select_within
    ]
    keys += [("--pair", args.pair)] if args.pair else []
    for option, key in keys:
        if configs and not any(_has_key(c, key) for c in configs):
            return f"{option} {key}: no run's config (.hydra/config.yaml) has this key"
    return None


def _interval_error(report: Report, asked: bool) -> str | None:
    """One line when ``--interval`` asks for what the runs cannot give, else None."""
    if not asked:
        return None
    if report.paired is None:
        return "--interval: needs --pair KEY (the interval is of a paired change)"
    missing = without_interval(report.paired)
    if not missing:
        return None
    e, n = missing[0], missing[0].delta.n
    return (
        f"--interval: {e.setting} ({e.other} vs {e.base}) rests on {n} seed "
        f"pair{'' if n == 1 else 's'} with {report.paired.target}; an interval needs >= 2 "
        f"({len(missing)} of {len(report.paired.settings)} comparisons lack one: add seeds or "
        "drop --interval)"
    )


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s folder, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _curves(runs: Sequence[RunRecord], report: Report, out: Path, target: str) -> Path | None:
    """``curves.png`` when matplotlib is installed and a run logged ``target``; else None."""
    if not have_matplotlib():
        print(PLOTS_HINT)
        return None
    png = out / "curves.png"
    return png if plot_curves(runs, report.configs, png, target) else None


def _wandb_mode(wanted: str, runs: Sequence[RunRecord]) -> str | None:
    """The mode to log the report in (``None``: W&B decides), or ``"off"``."""
    if wanted in ("offline", "online"):
        return wanted
    if wanted == "auto" and any(r.logged_to_wandb for r in runs):
        return None
    return "off"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        runs, report = build_report(
            args.folder,
            args.score,
            args.target or "knn/top1",
            args.label,
            args.select_within,
            args.pair,
            args.pair_score,
        )
    except ReportInputError as e:
        print(f"cld-report: {e}", file=sys.stderr)
        return 2
    refused = _unknown_key_error(runs, args) or _interval_error(report, args.interval)
    if refused:
        print(f"cld-report: {refused}", file=sys.stderr)
        return 2
    out = args.out or args.folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    png = _curves(runs, report, out, args.target)
    report.curves_png = str(png) if png else None
    page = markdown(report)
    write_atomic(out / "report.md", page)
    mode = _wandb_mode(args.wandb, runs)
    if mode != "off":
        from cld_lightning.report.wandb_log import log_to_wandb

        report.wandb_mode = log_to_wandb(report, out, png, mode)
    write_atomic(out / "report.json", json.dumps(to_json(report), indent=1, default=str))
    print(page)
    print(f"written: {out / 'report.md'}, {out / 'report.json'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
