"""Typed records of a report, and their JSON form (the keys of ``report.json``).

Every figure ``cld-report`` computes lives in one of these dataclasses; :func:`to_json` turns a
record into plain JSON values. A field marked :data:`OMIT_IF_NONE` is left out of the JSON while
it is ``None`` (older reports did not have it in that case); one marked :data:`EMPTY_IF_NONE` is
written as ``{}``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

OMIT_IF_NONE = {"omit_if_none": True}
EMPTY_IF_NONE = {"none_as": {}}
Key = tuple[str, ...]


def optional(meta: dict = OMIT_IF_NONE):  # noqa: ANN201 - a dataclass field
    """A field that defaults to ``None`` and follows ``meta`` in the JSON."""
    return field(default=None, metadata=meta)


def to_json(value: object) -> object:
    """Records, dicts, lists and paths as JSON values (records keep their field order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and f.metadata.get("omit_if_none"):
                continue
            out[f.name] = f.metadata["none_as"] if v is None and "none_as" in f.metadata else v
            out[f.name] = to_json(out[f.name])
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Stat:
    """Mean ± std (sample, ``n - 1``) of ``n`` finite values; NaN for none, std 0 for one."""

    mean: float
    std: float
    n: int

    @property
    def known(self) -> bool:
        return self.n > 0 and math.isfinite(self.mean)


@dataclass(frozen=True)
class Interval:
    """A two-sided ``level`` interval for a mean (paired t: ``mean ± t · std / sqrt(n)``)."""

    level: float
    low: float
    high: float
    dof: int

    @property
    def within_noise(self) -> bool:
        """The interval holds 0: the sign of the difference is not established."""
        return self.low <= 0.0 <= self.high


@dataclass
class ConfigRow:
    """One configuration: its name, overrides, seeds and mean ± std of every final metric."""

    config: str
    overrides: list[str]
    seeds: int
    unfinished: int
    paths: list[str]
    metrics: dict[str, Stat]
    baselines_from: str = "own runs"
    latest: list[tuple[int, float]] = field(default_factory=list)  # unfinished: (step, kNN)

    @property
    def key(self) -> Key:
        return tuple(self.overrides)

    def mean(self, metric: str) -> float:
        stat = self.metrics.get(metric)
        return stat.mean if stat is not None and stat.known else math.nan


@dataclass(frozen=True)
class Best:
    """The configuration with the highest mean target, and that mean."""

    config: str
    value: float


@dataclass(frozen=True)
class SeedNoise:
    """How much of the configurations' spread is seed noise (``summary.seed_noise``)."""

    seed_std: float
    seed_dof: int
    config_std: float
    reliability: float
    max_correlation: float


@dataclass
class ScoreRank:
    """How one label-free score ranks the configurations against the target.

    ``n`` configurations with both the score and the target (``seeds_min``-``seeds_max`` finished
    seeds each); ``random_regret``: the expected regret of a uniformly random pick among those
    ``n``. With fewer than 2 such configurations only ``n`` and ``note`` are set."""

    n: int
    note: str | None = optional()
    spearman: float | None = optional()
    kendall: float | None = optional()
    pick: str | None = optional()
    pick_value: float | None = optional()
    regret: float | None = optional()
    random_regret: float | None = optional()
    seeds_min: int | None = optional()
    seeds_max: int | None = optional()

    @property
    def ranked(self) -> bool:
        return self.spearman is not None


@dataclass
class Selection:
    """Label-free choices vs the labelled best over ``configs`` configurations."""

    target: str
    configs: int
    scores: dict[str, ScoreRank] = field(default_factory=dict)
    best: Best | None = optional()
    noise: SeedNoise | None = optional(EMPTY_IF_NONE)
    random_regret: float | None = optional()


@dataclass
class ScoreChange:
    """One score across one paired comparison: its mean change, how often its sign matched the
    target's (``agree`` of ``pairs``), the side it prefers and that choice's regret."""

    delta: Stat
    agree: int
    pairs: int
    choice: str
    regret: float


@dataclass
class PairedEntry:
    """One configuration against its setting's base, matched by seed (``other - base``)."""

    setting: str
    base: str
    other: str
    seeds: list[str]
    target_base: Stat
    target_other: Stat
    delta: Stat
    interval: Interval | None  # of ``delta``'s mean; None with fewer than 2 seed pairs
    scores: dict[str, ScoreChange] = field(default_factory=dict)
    label_free_choice: str | None = optional()


@dataclass(frozen=True)
class Skipped:
    """A setting ``--pair`` could not compare, and why."""

    setting: str
    reason: str


@dataclass(frozen=True)
class ScoreOverall:
    """One score over every paired comparison: sign agreement and the mean regret of its choice."""

    agree: int
    pairs: int
    mean_regret: float


@dataclass
class Paired:
    """``--pair KEY``: every paired comparison, the skipped settings and each score's totals."""

    key: str
    target: str
    decide_by: str
    level: float
    settings: list[PairedEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    overall: dict[str, ScoreOverall] = field(default_factory=dict)


@dataclass
class Report:
    """Everything ``cld-report`` found; ``to_json(report)`` is ``report.json``."""

    root: str
    score: str
    runs: int
    finished: int
    configs: list[ConfigRow]
    selection: Selection
    select_within: list[str] | None = optional()
    selection_within: dict[str, Selection] | None = optional()
    paired: Paired | None = optional()
    curves_png: str | None = None
    wandb_mode: str | None = optional()

    def sections(self) -> list[tuple[str | None, Selection]]:
        """The label-free choices to show: one per ``--select-within`` group, else one over all
        runs (name ``None``); a score compared across data sets means nothing."""
        if self.selection_within:
            return list(self.selection_within.items())
        return [(None, self.selection)]
