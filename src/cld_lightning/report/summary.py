"""Pure functions behind ``cld-report``: group runs into configurations (their overrides minus the
seed and bookkeeping), mean ± std over seeds, baselines beside each, and how well each label-free
score ranks the configurations against a labelled metric (Spearman ρ, the pick, its regret)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from cld_lightning.eval.selection import SCORES, score_of
from cld_lightning.report.runs import RunRecord

# overrides that do not make a different configuration (seeds are averaged over)
IGNORED_PREFIXES = (
    "seed=",
    "hydra.",
    "ckpt_path=",
    "trainer.enable_progress_bar=",
    "logger=",
    "plots.",
    "callbacks.",
    "baselines=",
    "paths.",
    "data.root=",
    "data.num_workers=",
    "data.persistent_workers=",
    "selection.enabled=",
    "final_knn=",
)
BASELINES = (
    "knn/pixel_top1",
    "knn/random_init_top1",
    "knn/random_init_backbone_top1",
)
# every baseline metric (raw pixels, the untrained network; kNN and linear, any protocol)
BASELINE_PREFIXES = ("knn/pixel_", "knn/random_init_", "linear/pixel_", "linear/random_init_")
Key = tuple[str, ...]


def config_key(overrides: Iterable[str]) -> Key:
    """The overrides that define a configuration, sorted (seed and bookkeeping dropped)."""
    return tuple(sorted(o for o in overrides if not o.startswith(IGNORED_PREFIXES)))


def group_runs(runs: Sequence[RunRecord]) -> dict[Key, list[RunRecord]]:
    """Runs by configuration, in the order the configurations first appear."""
    groups: dict[Key, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(config_key(run.overrides), []).append(run)
    return groups


def labels(keys: Sequence[Key]) -> dict[Key, str]:
    """A short name per configuration: the overrides that are not common to all of them."""
    common = set.intersection(*(set(k) for k in keys)) if keys else set()
    return {k: " ".join(o for o in k if o not in common) or "(no further override)" for k in keys}


def key_labels(groups: dict[Key, list[RunRecord]], label_keys: Sequence[str]) -> dict[Key, str]:
    """Names from composed-config values: ``key=value`` for the keys whose value differs between
    configurations (all of them when there is one configuration); a ``_target_`` shows its class
    name (``method=MoCo``)."""

    def shown(key: str, value: object) -> str:
        if key.endswith("._target_"):
            return f"{key.rsplit('.', 1)[0]}={str(value).rsplit('.', 1)[-1]}"
        return f"{key}={value}"

    values = {g: [members[0].config_value(k) for k in label_keys] for g, members in groups.items()}
    varying = [
        i for i in range(len(label_keys)) if len({repr(v[i]) for v in values.values()}) > 1
    ] or list(range(len(label_keys)))
    return {g: " ".join(shown(label_keys[i], v[i]) for i in varying) for g, v in values.items()}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of the finite values (std 0 for one value, NaN for none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.mean(vals), "std": std, "n": len(vals)}


def _data_key(key: Key) -> Key:
    return tuple(o for o in key if o.startswith(("data=", "data.", "experiment=")))


def summarize(runs: Sequence[RunRecord], label_keys: Sequence[str] = ()) -> list[dict]:
    """One row per configuration: finished/unfinished seeds and mean ± std of every final metric.

    Rows are named by the overrides that differ between configurations, or, with ``label_keys``
    (dotted keys of the composed config, e.g. ``cld.enabled``), by those keys' values.

    A configuration without baselines (``knn/pixel_top1``...: a sweep computes them once) takes
    them from the runs with the same data overrides, and says so (``baselines_from``)."""
    groups = group_runs(runs)
    names = labels(list(groups))
    if label_keys:
        names = key_labels(groups, label_keys)
    rows = []
    for key, members in groups.items():
        done = [r for r in members if r.finished]
        metric_names = sorted({m for r in done for m in r.metrics})
        rows.append(
            {
                "config": names[key],
                "overrides": list(key),
                "seeds": len(done),
                "unfinished": len(members) - len(done),
                "paths": [str(r.path) for r in members],
                "metrics": {
                    m: mean_std([r.metrics.get(m, math.nan) for r in done]) for m in metric_names
                },
                "baselines_from": "own runs",
                # unfinished runs: their newest logged kNN top-1, (step, value)
                "latest": [
                    list(r.curves["knn/top1"][-1])
                    for r in members
                    if not r.finished and r.curves.get("knn/top1")
                ],
            }
        )
    for row in rows:
        if any(m.startswith(BASELINE_PREFIXES) for m, v in row["metrics"].items() if v["n"]):
            continue
        same_data = [
            r
            for key, members in groups.items()
            if _data_key(key) == _data_key(tuple(row["overrides"]))
            for r in members
            if r.finished
        ]
        names = sorted({m for r in same_data for m in r.metrics if m.startswith(BASELINE_PREFIXES)})
        for b in names:
            row["metrics"][b] = mean_std([r.metrics[b] for r in same_data if b in r.metrics])
        if names:
            row["baselines_from"] = "runs with the same data overrides"
    return rows


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):  # ties share their average rank
            ranks[order[t]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when a side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"spearman needs two equal-length sequences of >= 2, got {len(x)}, {len(y)}"
        )
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def seed_noise(rows: Sequence[dict], target: str = "knn/top1") -> dict:
    """How much of the configurations' spread in ``target`` is seed noise.

    ``seed_std``: the pooled within-configuration std over seeds (configurations with >= 2
    seeds); ``config_std``: the std of the configurations' means; ``reliability``: the share of
    the means' variance that is not noise, ``1 - mean(seed_std² / n_i) / config_std²`` (floored
    at 0); ``max_correlation``: its square root, the highest correlation any label-free score can
    reach with these noisy means (the attenuation bound of classical test theory; for Spearman's
    ρ an approximation). Empty without a configuration of >= 2 seeds or with < 3 configurations."""
    stats = [row["metrics"][target] for row in rows if row["metrics"].get(target, {}).get("n")]
    repeated = [st for st in stats if st["n"] >= 2]
    if not repeated or len(stats) < 3:
        return {}
    dof = sum(st["n"] - 1 for st in repeated)
    seed_var = sum((st["n"] - 1) * st["std"] ** 2 for st in repeated) / dof
    config_var = statistics.variance([st["mean"] for st in stats])
    noise_var = statistics.mean([seed_var / st["n"] for st in stats])
    reliability = max(0.0, 1.0 - noise_var / config_var) if config_var > 0 else 0.0
    return {
        "seed_std": math.sqrt(seed_var),
        "seed_dof": dof,
        "config_std": math.sqrt(config_var),
        "reliability": reliability,
        "max_correlation": math.sqrt(reliability),
    }


def selection_table(
    rows: Sequence[dict], target: str = "knn/top1", scores: Sequence[str] = SCORES
) -> dict:
    """For each label-free score: Spearman ρ against ``target`` over the configurations, the
    configuration it picks (largest mean score), the target's value there, and the regret (the
    best configuration's target minus the pick's). Configurations missing either side are left
    out of that score's figures (``n`` says how many were used)."""
    means = [({m: v["mean"] for m, v in row["metrics"].items()}, row["config"]) for row in rows]
    labelled = [(m, c) for m, c in means if math.isfinite(m.get(target, math.nan))]
    out: dict = {"target": target, "configs": len(labelled), "scores": {}}
    if not labelled:
        return out
    best_metrics, best_config = max(labelled, key=lambda mc: mc[0][target])
    out["best"] = {"config": best_config, "value": best_metrics[target]}
    out["noise"] = seed_noise(rows, target)
    for score in scores:
        pairs = [(score_of(m, score), m[target], c) for m, c in labelled]
        pairs = [p for p in pairs if math.isfinite(p[0])]
        if len(pairs) < 2:
            out["scores"][score] = {"n": len(pairs), "note": "fewer than 2 runs have this score"}
            continue
        pick = max(pairs, key=lambda p: p[0])
        out["scores"][score] = {
            "n": len(pairs),
            "spearman": spearman([p[0] for p in pairs], [p[1] for p in pairs]),
            "pick": pick[2],
            "pick_value": pick[1],
            "regret": best_metrics[target] - pick[1],
        }
    return out


def selection_within(
    rows: Sequence[dict],
    groups: dict[Key, list[RunRecord]],
    within_keys: Sequence[str],
    target: str = "knn/top1",
    scores: Sequence[str] = SCORES,
) -> dict[str, dict]:
    """``selection_table`` separately for each value of ``within_keys`` (composed-config keys,
    e.g. ``data.dataset data.imbalance_ratio``): a label-free score is compared only between runs
    on the same data, never across data sets. Keys are read from each configuration's first run;
    returns ``{"data.dataset=fashion_mnist ...": selection}`` in the rows' order."""
    first = {key: members[0] for key, members in groups.items()}
    by_value: dict[str, list[dict]] = {}
    for row in rows:
        run = first[tuple(row["overrides"])]
        name = " ".join(f"{k}={run.config_value(k)}" for k in within_keys)
        by_value.setdefault(name, []).append(row)
    return {name: selection_table(members, target, scores) for name, members in by_value.items()}
