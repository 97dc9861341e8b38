"""Paired comparison for ``cld-report --pair KEY``: runs that differ only in one composed-config key
(``cld.enabled``: CLD on vs off), matched by seed, and whether each label-free score moves the same
way as the labelled metric. This is the on/off decision a user makes without labels: turn CLD on
when the score is higher with it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cld_lightning.eval.selection import SCORES, score_of
from cld_lightning.report.runs import ReportInputError, RunRecord
from cld_lightning.report.summary import config_key, key_labels, labels, mean_std


def _without_key(overrides: Sequence[str], key: str) -> tuple[str, ...]:
    """The configuration's overrides minus those that set ``key``'s config group (``cld=off``,
    ``cld.enabled=true``, ``cld.weight=...`` for ``cld.enabled``)."""
    group = key.split(".", 1)[0]
    return tuple(o for o in config_key(overrides) if o.split("=", 1)[0].split(".", 1)[0] != group)


# the score whose change decides "CLD on or off" (measured: docs/BENCHMARKS.md, "Where CLD pays")
ON_OFF_SCORE = "rankme"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def paired_differences(
    runs: Sequence[RunRecord],
    key: str,
    target: str = "knn/top1",
    scores: Sequence[str] = SCORES,
    name_keys: Sequence[str] = (),
    decide_by: str = ON_OFF_SCORE,
) -> dict:
    """Per setting (the runs' overrides minus ``key``'s group), the seed-matched differences
    ``other - base`` of ``target`` and of each label-free score, where ``key`` takes exactly two
    values (``base`` is the smaller: ``False`` before ``True``).

    For each score: ``agree``, the pairs where its difference has the target's sign (out of
    ``pairs`` with both non-zero); ``choice``, the side its mean difference prefers; ``regret``,
    the better side's mean target minus the chosen side's. ``overall`` sums the agreements.
    Settings where ``key`` does not take two values, or no seed is shared, are listed in
    ``skipped``. Settings are named by the overrides that differ between them or, with
    ``name_keys`` (composed-config keys, e.g. ``method._target_ data.dataset``), by those keys.

    ``label_free_choice`` is the side ``decide_by`` prefers (default RankMe, the score that made the
    on/off call best on the measured settings: docs/BENCHMARKS.md, "Where CLD pays"). Runs without
    ``target`` (no labels) still get the score changes and this choice."""
    by_setting: dict[tuple[str, ...], dict[str, dict[str | None, RunRecord]]] = {}
    finished = [r for r in runs if r.finished]
    for run in finished:
        value = run.config_value(key)
        if value is None:
            continue
        sides = by_setting.setdefault(_without_key(run.overrides, key), {})
        sides.setdefault(repr(value), {})[run.seed] = run
    if finished and not by_setting:
        raise ReportInputError(
            f"--pair {key}: no finished run has this key in its .hydra/config.yaml "
            f"(e.g. {finished[0].path / '.hydra' / 'config.yaml'})"
        )
    names = labels(list(by_setting)) if by_setting else {}
    if name_keys and by_setting:
        groups = {
            setting: [next(iter(side.values())) for side in sides.values()]
            for setting, sides in by_setting.items()
        }
        names = key_labels(groups, [k for k in name_keys if k != key] or list(name_keys))
    out: dict = {
        "key": key,
        "target": target,
        "decide_by": decide_by,
        "settings": [],
        "skipped": [],
        "overall": {},
    }
    totals = {s: [0, 0] for s in scores}
    for setting, sides in by_setting.items():
        if len(sides) != 2:
            out["skipped"].append(
                {"setting": names[setting], "reason": f"{key} takes {len(sides)} value(s)"}
            )
            continue
        base_value, other_value = sorted(sides)
        base, other = sides[base_value], sides[other_value]
        seeds = sorted(set(base) & set(other), key=str)
        if not seeds:
            out["skipped"].append({"setting": names[setting], "reason": "no seed in common"})
            continue
        delta = [_target(other[s], target) - _target(base[s], target) for s in seeds]
        entry: dict = {
            "setting": names[setting],
            "base": f"{key}={base_value}",
            "other": f"{key}={other_value}",
            "seeds": [str(s) for s in seeds],
            "target_base": mean_std([_target(base[s], target) for s in seeds]),
            "target_other": mean_std([_target(other[s], target) for s in seeds]),
            "delta": mean_std(delta),
            "scores": {},
        }
        means = (entry["target_base"]["mean"], entry["target_other"]["mean"])
        for score in scores:
            d = [
                score_of(other[s].metrics, score) - score_of(base[s].metrics, score) for s in seeds
            ]
            usable = [(a, b) for a, b in zip(d, delta, strict=True) if math.isfinite(a)]
            if not usable:
                continue
            judged = [(a, b) for a, b in usable if math.isfinite(b) and _sign(a) and _sign(b)]
            agree = sum(_sign(a) == _sign(b) for a, b in judged)
            totals[score][0] += agree
            totals[score][1] += len(judged)
            mean_d = sum(a for a, _ in usable) / len(usable)
            chosen = 1 if mean_d > 0 else 0
            entry["scores"][score] = {
                "delta": mean_std([a for a, _ in usable]),
                "agree": agree,
                "pairs": len(judged),
                "choice": entry["other"] if chosen else entry["base"],
                "regret": max(means) - means[chosen]
                if all(map(math.isfinite, means))
                else math.nan,
            }
        if decide_by in entry["scores"]:
            entry["label_free_choice"] = entry["scores"][decide_by]["choice"]
        out["settings"].append(entry)
    out["overall"] = {
        s: {"agree": a, "pairs": n, "mean_regret": _mean_regret(out["settings"], s)}
        for s, (a, n) in totals.items()
        if n
    }
    return out


def _target(run: RunRecord, target: str) -> float:
    return run.metrics.get(target, math.nan)


def _mean_regret(settings: Sequence[dict], score: str) -> float:
    regrets = [e["scores"][score]["regret"] for e in settings if score in e["scores"]]
    regrets = [r for r in regrets if math.isfinite(r)]
    return sum(regrets) / len(regrets) if regrets else math.nan
