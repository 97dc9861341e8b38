"""``curves.png``: a metric against optimiser steps, mean over seeds per configuration, with the
baselines dashed. Needs matplotlib (the ``[plots]`` extra), imported only here and only when
drawing: without it ``cld-report`` writes everything else and says how to get the curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cld_lightning.report.records import ConfigRow
from cld_lightning.report.runs import RunRecord
from cld_lightning.report.summary import BASELINES, group_runs

PLOTS_HINT = (
    "curves.png skipped: matplotlib is not installed "
    '(pip install "cld-lightning[plots]" to get the learning curves)'
)
_STYLES = {
    "knn/pixel_top1": ("--", "raw pixels"),
    "knn/random_init_top1": (":", "untrained head"),
    "knn/random_init_backbone_top1": ("-.", "untrained backbone"),
}


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the ``[plots]`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(
    runs: Sequence[RunRecord], rows: Sequence[ConfigRow], path: Path, metric: str
) -> bool:
    """Draw ``metric`` against optimiser steps into ``path``; False when no run logged it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {row.key: row for row in rows}
    fig, ax = plt.subplots(figsize=(11, 5))
    drawn = False
    baselines_drawn: set[tuple] = set()
    for key, members in group_runs(runs).items():
        steps, means = _mean_curve(members, metric)
        if not steps:
            continue
        row = by_key[key]
        (line,) = ax.plot(steps, means, marker=".", lw=1, label=f"{row.config} (n={len(members)})")
        drawn = True
        if metric == "knn/top1":
            _baselines(ax, row, line.get_color(), baselines_drawn)
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(metric + " (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _mean_curve(members: Sequence[RunRecord], metric: str) -> tuple[list[int], list[float]]:
    """The mean over runs of ``metric`` at every logged step."""
    by_step: dict[int, list[float]] = {}
    for r in members:
        for step, value in r.curves.get(metric, []):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def _baselines(ax: object, row: ConfigRow, color: str, drawn: set[tuple]) -> None:
    """Baselines belong to a data set: one set of lines per distinct set of values, in the
    colour of the first configuration that has it."""
    values = tuple(
        round(row.metrics[b].mean, 2) if b in row.metrics and row.metrics[b].n else None
        for b in BASELINES
    )
    if values in drawn or all(v is None for v in values):
        return
    drawn.add(values)
    for b, v in zip(BASELINES, values, strict=True):
        if v is not None:
            ls, what = _STYLES[b]
            ax.axhline(v, color=color, ls=ls, lw=0.8, alpha=0.7, label=f"{what}, as {row.config}")
