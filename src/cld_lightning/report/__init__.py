"""``cld-report``: tables, learning curves and label-free vs kNN choices for a folder of runs.

One module per job: :mod:`.runs` reads run folders (Hydra's ``.hydra/overrides.yaml`` and
``config.yaml``, ``metrics.json``, the CSV logger's curves); :mod:`.records` holds the typed
records of a report and their JSON form; :mod:`.stats` the pure statistics (mean ± std, Spearman
ρ, Kendall τ, the t interval, a random pick's regret); :mod:`.summary` groups runs into
configurations and ranks them by each label-free score; :mod:`.paired` compares seed-matched runs
that differ in one key (CLD on vs off); :mod:`.markdown` renders ``report.md``; :mod:`.curves`
draws ``curves.png`` (matplotlib, optional); :mod:`.wandb_log` logs the report to W&B;
:mod:`.cli` parses the arguments and writes the files.
"""

from cld_lightning.report.paired import paired_differences
from cld_lightning.report.records import Report, to_json
from cld_lightning.report.runs import RunRecord, find_runs
from cld_lightning.report.stats import kendall_tau, spearman, t_interval, t_quantile
from cld_lightning.report.summary import (
    DEFAULT_SCORE,
    config_key,
    group_runs,
    selection_table,
    selection_within,
    summarize,
)

__all__ = [
    "DEFAULT_SCORE",
    "Report",
    "RunRecord",
    "config_key",
    "find_runs",
    "group_runs",
    "kendall_tau",
    "paired_differences",
    "selection_table",
    "selection_within",
    "spearman",
    "summarize",
    "t_interval",
    "t_quantile",
    "to_json",
]
