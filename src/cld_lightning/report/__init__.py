"""``cld-report``: tables, learning curves and label-free vs kNN choices for a folder of runs.

Layers: :mod:`.runs` reads run folders (Hydra's ``.hydra/overrides.yaml``, ``metrics.json``, the
CSV logger's curves), :mod:`.summary` turns them into tables with pure functions, :mod:`.paired` compares
seed-matched runs that differ in one key (CLD on vs off), :mod:`.cli`
writes ``report.md`` / ``report.json`` / ``curves.png`` and the W&B summary.
"""

from cld_lightning.report.paired import paired_differences
from cld_lightning.report.runs import RunRecord, find_runs
from cld_lightning.report.summary import (
    config_key,
    group_runs,
    selection_table,
    selection_within,
    spearman,
    summarize,
)

__all__ = [
    "RunRecord",
    "config_key",
    "find_runs",
    "group_runs",
    "paired_differences",
    "selection_table",
    "selection_within",
    "spearman",
    "summarize",
]
