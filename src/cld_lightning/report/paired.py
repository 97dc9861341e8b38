"""Paired comparison for ``cld-report --pair KEY``: runs that differ in one composed-config key's
config group (``cld.enabled``: CLD on vs off; ``cld.weight``: each λ > 0 configuration against
λ = 0), matched by seed, and whether each label-free score moves the same way as the labelled
metric. This is the on/off decision a user makes without labels: turn CLD on when the score is
higher with it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cld_lightning.eval.selection import SCORES, score_of
from cld_lightning.report.records import (
    Key,
    Paired,
    PairedEntry,
    ScoreChange,
    ScoreOverall,
    Skipped,
)
from cld_lightning.report.runs import ReportInputError, RunRecord
from cld_lightning.report.stats import LEVEL, mean_std, t_interval
from cld_lightning.report.summary import DEFAULT_SCORE, config_key, key_labels, labels

Members = list[tuple[object, RunRecord]]  # (the key's value, the run) of one setting


def _group(override: str) -> str:
    return override.split("=", 1)[0].split(".", 1)[0]


def _without_group(key: Key, group: str) -> Key:
    """A configuration's overrides minus those that set ``group`` (``cld=off``,
    ``cld.weight=...`` for the group ``cld``)."""
    return tuple(o for o in key if _group(o) != group)


def _order(value: object) -> tuple[int, float, str]:
    """Sort order of config values: numbers and booleans by value (``False`` < ``True``)."""
    if isinstance(value, bool | int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _target(run: RunRecord, target: str) -> float:
    return run.metrics.get(target, math.nan)


def paired_differences(
    runs: Sequence[RunRecord],
    key: str,
    target: str = "knn/top1",
    scores: Sequence[str] = SCORES,
    name_keys: Sequence[str] = (),
    decide_by: str = DEFAULT_SCORE,
    level: float = LEVEL,
) -> Paired:
    """Per setting (the runs' overrides minus ``key``'s config group), each configuration whose
    ``key`` differs from the setting's base value (the smallest: ``False`` before ``True``, λ = 0
    before λ > 0) against the base configuration, seed by seed: the differences ``other - base`` of
    ``target`` and of each label-free score, and the paired t ``level`` interval of the target's
    mean difference (with >= 2 seed pairs; it holds 0: within noise).

    For each score: ``agree``, the pairs where its difference has the target's sign (out of
    ``pairs`` with both non-zero); ``choice``, the side its mean difference prefers; ``regret``,
    the better side's mean target minus the chosen side's. ``overall`` sums them over settings.
    ``label_free_choice`` is the side ``decide_by`` prefers. Runs without ``target`` (no labels)
    still get the score changes and that choice. Settings with one value of ``key``, several base
    configurations, or no shared seed are listed in ``skipped``. Settings are named by the
    overrides that differ between them or by ``name_keys``' values."""
    group = key.split(".", 1)[0]
    by_setting = _settings(runs, key, group)
    names = _setting_names(by_setting, name_keys, group)
    out = Paired(key=key, target=target, decide_by=decide_by, level=level)
    for setting, members in by_setting.items():
        name = names[setting]
        for found in _compare(name, members, key, group, target, scores, decide_by, level):
            if isinstance(found, str):
                out.skipped.append(Skipped(name, found))
            else:
                out.settings.append(found)
    out.overall = _overall(out.settings, scores)
    return out


def _settings(runs: Sequence[RunRecord], key: str, group: str) -> dict[Key, Members]:
    """The finished runs that have ``key``, by setting; an error when none has it."""
    finished = [r for r in runs if r.finished]
    by_setting: dict[Key, Members] = {}
    for run in finished:
        value = run.config_value(key)
        if value is not None:
            setting = _without_group(config_key(run.overrides), group)
            by_setting.setdefault(setting, []).append((value, run))
    if finished and not by_setting:
        raise ReportInputError(
            f"--pair {key}: no finished run has this key in its .hydra/config.yaml "
            f"(e.g. {finished[0].path / '.hydra' / 'config.yaml'})"
        )
    return by_setting


def _setting_names(
    by_setting: dict[Key, Members], name_keys: Sequence[str], group: str
) -> dict[Key, str]:
    """Settings named by their differing overrides, or by ``name_keys`` outside ``group``."""
    if not by_setting:
        return {}
    shown = [k for k in name_keys if k.split(".", 1)[0] != group]
    if shown:
        return key_labels({s: [m[0][1]] for s, m in by_setting.items()}, shown)
    return labels(list(by_setting))


def _compare(
    name: str,
    members: Members,
    key: str,
    group: str,
    target: str,
    scores: Sequence[str],
    decide_by: str,
    level: float,
) -> list[PairedEntry | str]:
    """The comparisons of the setting ``name`` against its base (an entry each), or why there
    are none."""
    base_value, base, others = _split_base(members)
    if not others:
        return [f"{key} takes one value ({base_value})"]
    if len({config_key(r.overrides) for r in base}) > 1:
        return [f"several configurations have {key}={base_value}"]
    base_key = config_key(base[0].overrides)
    base_by_seed = {r.seed: r for r in base}
    found: list[PairedEntry | str] = []
    for other_key, other_runs in others.items():
        other_by_seed = {r.seed: r for r in other_runs}
        seeds = sorted(set(base_by_seed) & set(other_by_seed), key=str)
        if not seeds:
            found.append("no seed in common")
            continue
        sides = (
            f"{key}={base_value}",
            _other_label(key, other_runs[0], other_key, base_key, group),
        )
        pairs = [(base_by_seed[s], other_by_seed[s]) for s in seeds]
        entry = _entry(name, pairs, target, sides, level)
        _score_changes(entry, pairs, target, scores, decide_by)
        found.append(entry)
    return found


def _split_base(members: Members) -> tuple[object, list[RunRecord], dict[Key, list[RunRecord]]]:
    """The base value of a setting (the smallest), its runs, and the other runs by configuration."""
    base_value = min((v for v, _ in members), key=_order)
    base = [r for v, r in members if _order(v) == _order(base_value)]
    others: dict[Key, list[RunRecord]] = {}
    for v, r in members:
        if _order(v) != _order(base_value):
            others.setdefault(config_key(r.overrides), []).append(r)
    return base_value, base, others


def _overall(settings: Sequence[PairedEntry], scores: Sequence[str]) -> dict[str, ScoreOverall]:
    """Each score's sign agreement summed over the comparisons and its mean regret."""
    overall: dict[str, ScoreOverall] = {}
    for score in scores:
        judged = [e.scores[score] for e in settings if score in e.scores]
        pairs = sum(s.pairs for s in judged)
        if pairs:
            regrets = [s.regret for s in judged if math.isfinite(s.regret)]
            overall[score] = ScoreOverall(
                agree=sum(s.agree for s in judged),
                pairs=pairs,
                mean_regret=sum(regrets) / len(regrets) if regrets else math.nan,
            )
    return overall


def _other_label(key: str, run: RunRecord, other: Key, base: Key, group: str) -> str:
    """``key=value`` plus the other configuration's overrides of the same group that the base
    configuration does not have (``cld.weight=0.8 cld.num_clusters=64``)."""
    own = f"{key}={run.config_value(key)}"
    extra = [o for o in other if _group(o) == group and o not in base and o.split("=")[0] != key]
    return " ".join([own, *extra])


def _entry(
    setting: str,
    pairs: Sequence[tuple[RunRecord, RunRecord]],
    target: str,
    sides: tuple[str, str],
    level: float,
) -> PairedEntry:
    """One comparison of ``setting`` over its seed pairs ``(base run, other run)``: the target on
    each side, its change and the interval of that change's mean."""
    delta = [_target(o, target) - _target(b, target) for b, o in pairs]
    return PairedEntry(
        setting=setting,
        base=sides[0],
        other=sides[1],
        seeds=[str(b.seed) for b, _ in pairs],
        target_base=mean_std([_target(b, target) for b, _ in pairs]),
        target_other=mean_std([_target(o, target) for _, o in pairs]),
        delta=mean_std(delta),
        interval=t_interval(delta, level),
    )


def _score_changes(
    entry: PairedEntry,
    pairs: Sequence[tuple[RunRecord, RunRecord]],
    target: str,
    scores: Sequence[str],
    decide_by: str,
) -> None:
    """Each score's change over the seed pairs, and the side ``decide_by`` prefers."""
    delta = [_target(o, target) - _target(b, target) for b, o in pairs]
    means = (entry.target_base.mean, entry.target_other.mean)
    for score in scores:
        d = [score_of(o.metrics, score) - score_of(b.metrics, score) for b, o in pairs]
        usable = [(a, b) for a, b in zip(d, delta, strict=True) if math.isfinite(a)]
        if not usable:
            continue
        judged = [(a, b) for a, b in usable if math.isfinite(b) and _sign(a) and _sign(b)]
        chosen = 1 if sum(a for a, _ in usable) > 0 else 0
        entry.scores[score] = ScoreChange(
            delta=mean_std([a for a, _ in usable]),
            agree=sum(_sign(a) == _sign(b) for a, b in judged),
            pairs=len(judged),
            choice=entry.other if chosen else entry.base,
            regret=max(means) - means[chosen] if all(map(math.isfinite, means)) else math.nan,
        )
    if decide_by in entry.scores:
        entry.label_free_choice = entry.scores[decide_by].choice


def without_interval(paired: Paired) -> list[PairedEntry]:
    """The comparisons that have no interval (one seed pair, or no target on one side)."""
    return [e for e in paired.settings if e.interval is None]
