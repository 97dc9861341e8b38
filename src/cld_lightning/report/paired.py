"""Paired comparison for ``cld-report --pair KEY``: runs that differ in one composed-config key's
config group (``cld.enabled``: CLD on vs off; ``cld.weight``: each λ > 0 configuration against
λ = 0), matched by seed, and whether each label-free score moves the same way as the labelled
metric. This is the on/off decision a user makes without labels: turn CLD on when the score is
higher with it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cld_lightning.eval.selection import SCORES, score_of
from cld_lightning.report.runs import ReportInputError, RunRecord
from cld_lightning.report.summary import Key, config_key, key_labels, labels, mean_std

# the score whose change gives the label-free on/off choice: the lowest regret of the scores
# measured, though keeping CLD on did better still (docs/BENCHMARKS.md, "Turning CLD on without labels")
ON_OFF_SCORE = "rankme"


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
    decide_by: str = ON_OFF_SCORE,
) -> dict:
    """Per setting (the runs' overrides minus ``key``'s config group), each configuration whose
    ``key`` differs from the setting's base value (the smallest: ``False`` before ``True``, λ = 0
    before λ > 0) against the base configuration, seed by seed: the differences ``other - base`` of
    ``target`` and of each label-free score.

    For each score: ``agree``, the pairs where its difference has the target's sign (out of
    ``pairs`` with both non-zero); ``choice``, the side its mean difference prefers; ``regret``,
    the better side's mean target minus the chosen side's. ``overall`` sums them over settings.
    ``label_free_choice`` is the side ``decide_by`` prefers (RankMe by default). Runs without
    ``target`` (no labels) still get the score changes and that choice. Settings with one value
    of ``key``, several base configurations, or no shared seed are listed in ``skipped``. Settings
    are named by the overrides that differ between them or by ``name_keys``' values."""
    group = key.split(".", 1)[0]
    finished = [r for r in runs if r.finished]
    by_setting: dict[Key, list[tuple[object, RunRecord]]] = {}
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
    names = labels(list(by_setting)) if by_setting else {}
    shown = [k for k in name_keys if k.split(".", 1)[0] != group]  # keys that name a setting
    if shown and by_setting:
        names = key_labels({s: [m[0][1]] for s, m in by_setting.items()}, shown)
    out: dict = {
        "key": key,
        "target": target,
        "decide_by": decide_by,
        "settings": [],
        "skipped": [],
        "overall": {},
    }
    for setting, members in by_setting.items():
        base_value = min((v for v, _ in members), key=_order)
        base = [r for v, r in members if _order(v) == _order(base_value)]
        others: dict[Key, list[RunRecord]] = {}
        for v, r in members:
            if _order(v) != _order(base_value):
                others.setdefault(config_key(r.overrides), []).append(r)
        if not others:
            reason = f"{key} takes one value ({base_value})"
            out["skipped"].append({"setting": names[setting], "reason": reason})
            continue
        if len({config_key(r.overrides) for r in base}) > 1:
            reason = f"several configurations have {key}={base_value}"
            out["skipped"].append({"setting": names[setting], "reason": reason})
            continue
        base_by_seed = {r.seed: r for r in base}
        base_key = config_key(base[0].overrides)
        for other_key, other_runs in others.items():
            entry = _entry(
                base_by_seed,
                {r.seed: r for r in other_runs},
                target,
                scores,
                decide_by,
                base_label=f"{key}={base_value}",
                other_label=_other_label(key, other_runs[0], other_key, base_key, group),
            )
            if entry is None:
                out["skipped"].append({"setting": names[setting], "reason": "no seed in common"})
                continue
            out["settings"].append({"setting": names[setting], **entry})
    for score in scores:
        judged = [e["scores"][score] for e in out["settings"] if score in e["scores"]]
        pairs = sum(s["pairs"] for s in judged)
        if pairs:
            regrets = [s["regret"] for s in judged if math.isfinite(s["regret"])]
            out["overall"][score] = {
                "agree": sum(s["agree"] for s in judged),
                "pairs": pairs,
                "mean_regret": sum(regrets) / len(regrets) if regrets else math.nan,
            }
    return out


def _other_label(key: str, run: RunRecord, other: Key, base: Key, group: str) -> str:
    """``key=value`` plus the other configuration's overrides of the same group that the base
    configuration does not have (``cld.weight=0.8 cld.num_clusters=64``)."""
    own = f"{key}={run.config_value(key)}"
    extra = [o for o in other if _group(o) == group and o not in base and o.split("=")[0] != key]
    return " ".join([own, *extra])


def _entry(
    base: dict[str | None, RunRecord],
    other: dict[str | None, RunRecord],
    target: str,
    scores: Sequence[str],
    decide_by: str,
    base_label: str,
    other_label: str,
) -> dict | None:
    """One comparison: the seeds both sides have, the target's and each score's changes."""
    seeds = sorted(set(base) & set(other), key=str)
    if not seeds:
        return None
    delta = [_target(other[s], target) - _target(base[s], target) for s in seeds]
    entry: dict = {
        "base": base_label,
        "other": other_label,
        "seeds": [str(s) for s in seeds],
        "target_base": mean_std([_target(base[s], target) for s in seeds]),
        "target_other": mean_std([_target(other[s], target) for s in seeds]),
        "delta": mean_std(delta),
        "scores": {},
    }
    means = (entry["target_base"]["mean"], entry["target_other"]["mean"])
    for score in scores:
        d = [score_of(other[s].metrics, score) - score_of(base[s].metrics, score) for s in seeds]
        usable = [(a, b) for a, b in zip(d, delta, strict=True) if math.isfinite(a)]
        if not usable:
            continue
        judged = [(a, b) for a, b in usable if math.isfinite(b) and _sign(a) and _sign(b)]
        chosen = 1 if sum(a for a, _ in usable) > 0 else 0
        entry["scores"][score] = {
            "delta": mean_std([a for a, _ in usable]),
            "agree": sum(_sign(a) == _sign(b) for a, b in judged),
            "pairs": len(judged),
            "choice": entry["other"] if chosen else entry["base"],
            "regret": max(means) - means[chosen] if all(map(math.isfinite, means)) else math.nan,
        }
    if decide_by in entry["scores"]:
        entry["label_free_choice"] = entry["scores"][decide_by]["choice"]
    return entry
