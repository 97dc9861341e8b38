"""Pure functions behind ``cld-report``: group runs into configurations (their overrides minus the
seed and bookkeeping), mean ± std over seeds, baselines beside each, and how well each label-free
score ranks the configurations against a labelled metric (Spearman ρ and Kendall τ, the pick, its
regret beside a random pick's, and the seed-noise ceiling)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from cld_lightning.eval.selection import SCORES, score_of
from cld_lightning.report.records import Best, ConfigRow, Key, ScoreRank, SeedNoise, Selection
from cld_lightning.report.runs import RunRecord
from cld_lightning.report.stats import kendall_tau, mean_std, random_pick_regret, spearman

# the label-free score whose pick is the default choice (``--score``) and whose change decides a
# paired comparison (``--pair-score``): the default of ``selection.score`` in cld-train
DEFAULT_SCORE = "retrieval"

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


def _data_key(key: Key) -> Key:
    return tuple(o for o in key if o.startswith(("data=", "data.", "experiment=")))


def summarize(runs: Sequence[RunRecord], label_keys: Sequence[str] = ()) -> list[ConfigRow]:
    """One row per configuration: finished/unfinished seeds and mean ± std of every final metric.

    Rows are named by the overrides that differ between configurations, or, with ``label_keys``
    (dotted keys of the composed config, e.g. ``cld.enabled``), by those keys' values.

    A configuration without baselines (``knn/pixel_top1``...: a sweep computes them once) takes
    them from the runs with the same data overrides, and says so (``baselines_from``)."""
    groups = group_runs(runs)
    names = key_labels(groups, label_keys) if label_keys else labels(list(groups))
    rows = [_row(names[key], key, members) for key, members in groups.items()]
    for row in rows:
        _lend_baselines(row, groups)
    return rows


def _row(name: str, key: Key, members: Sequence[RunRecord]) -> ConfigRow:
    done = [r for r in members if r.finished]
    metric_names = sorted({m for r in done for m in r.metrics})
    return ConfigRow(
        config=name,
        overrides=list(key),
        seeds=len(done),
        unfinished=len(members) - len(done),
        paths=[str(r.path) for r in members],
        metrics={m: mean_std([r.metrics.get(m, math.nan) for r in done]) for m in metric_names},
        latest=[  # unfinished runs: their newest logged kNN top-1
            r.curves["knn/top1"][-1] for r in members if not r.finished and r.curves.get("knn/top1")
        ],
    )


def _lend_baselines(row: ConfigRow, groups: dict[Key, list[RunRecord]]) -> None:
    """A row without baseline metrics takes those of the finished runs on the same data."""
    if any(m.startswith(BASELINE_PREFIXES) for m, v in row.metrics.items() if v.n):
        return
    same_data = [
        r
        for key, members in groups.items()
        if _data_key(key) == _data_key(row.key)
        for r in members
        if r.finished
    ]
    names = sorted({m for r in same_data for m in r.metrics if m.startswith(BASELINE_PREFIXES)})
    for b in names:
        row.metrics[b] = mean_std([r.metrics[b] for r in same_data if b in r.metrics])
    if names:
        row.baselines_from = "runs with the same data overrides"


def seed_noise(rows: Sequence[ConfigRow], target: str = "knn/top1") -> SeedNoise | None:
    """How much of the configurations' spread in ``target`` is seed noise.

    ``seed_std``: the pooled within-configuration std over seeds (configurations with >= 2
    seeds); ``config_std``: the std of the configurations' means; ``reliability``: the share of
    the means' variance that is not noise, ``1 - mean(seed_std² / n_i) / config_std²`` (floored
    at 0); ``max_correlation``: its square root, the highest correlation any label-free score can
    reach with these noisy means (the attenuation bound of classical test theory; for Spearman's
    ρ an approximation). ``None`` without a configuration of >= 2 seeds or with < 3
    configurations."""
    stats = [row.metrics[target] for row in rows if target in row.metrics and row.metrics[target].n]
    repeated = [st for st in stats if st.n >= 2]
    if not repeated or len(stats) < 3:
        return None
    dof = sum(st.n - 1 for st in repeated)
    seed_var = sum((st.n - 1) * st.std**2 for st in repeated) / dof
    config_var = statistics.variance([st.mean for st in stats])
    noise_var = statistics.mean([seed_var / st.n for st in stats])
    reliability = max(0.0, 1.0 - noise_var / config_var) if config_var > 0 else 0.0
    return SeedNoise(
        seed_std=math.sqrt(seed_var),
        seed_dof=dof,
        config_std=math.sqrt(config_var),
        reliability=reliability,
        max_correlation=math.sqrt(reliability),
    )


def selection_table(
    rows: Sequence[ConfigRow], target: str = "knn/top1", scores: Sequence[str] = SCORES
) -> Selection:
    """For each label-free score: Spearman ρ and Kendall τ against ``target`` over the
    configurations, the configuration it picks (largest mean score), the target's value there,
    the regret (the best configuration's target minus the pick's) and, beside it, the expected
    regret of a random pick among the same configurations. Configurations missing either side
    are left out of that score's figures (``n`` says how many were used)."""
    labelled = [row for row in rows if math.isfinite(row.mean(target))]
    out = Selection(target=target, configs=len(labelled))
    if not labelled:
        return out
    best = max(labelled, key=lambda row: row.mean(target))
    out.best = Best(best.config, best.mean(target))
    out.noise = seed_noise(rows, target)
    out.random_regret = random_pick_regret([row.mean(target) for row in labelled])
    for score in scores:
        out.scores[score] = _score_rank(labelled, score, target, out.best.value)
    return out


def _score_rank(rows: Sequence[ConfigRow], score: str, target: str, best: float) -> ScoreRank:
    """One score's ranking of ``rows`` (those with a finite ``target``)."""
    scored = [(score_of(_means(row), score), row) for row in rows]
    scored = [(s, row) for s, row in scored if math.isfinite(s)]
    if len(scored) < 2:
        return ScoreRank(n=len(scored), note="fewer than 2 runs have this score")
    values = [s for s, _ in scored]
    targets = [row.mean(target) for _, row in scored]
    pick_score, pick = max(scored, key=lambda sr: sr[0])
    return ScoreRank(
        n=len(scored),
        spearman=spearman(values, targets),
        kendall=kendall_tau(values, targets),
        pick=pick.config,
        pick_value=pick.mean(target),
        regret=best - pick.mean(target),
        random_regret=random_pick_regret(targets, best),
        seeds_min=min(row.seeds for _, row in scored),
        seeds_max=max(row.seeds for _, row in scored),
    )


def _means(row: ConfigRow) -> dict[str, float]:
    return {m: v.mean for m, v in row.metrics.items()}


def selection_within(
    rows: Sequence[ConfigRow],
    groups: dict[Key, list[RunRecord]],
    within_keys: Sequence[str],
    target: str = "knn/top1",
    scores: Sequence[str] = SCORES,
) -> dict[str, Selection]:
    """``selection_table`` separately for each value of ``within_keys`` (composed-config keys,
    e.g. ``data.dataset data.imbalance_ratio``): a label-free score is compared only between runs
    on the same data, never across data sets. Keys are read from each configuration's first run;
    returns ``{"data.dataset=fashion_mnist ...": selection}`` in the rows' order."""
    first = {key: members[0] for key, members in groups.items()}
    by_value: dict[str, list[ConfigRow]] = {}
    for row in rows:
        run = first[row.key]
        name = " ".join(f"{k}={run.config_value(k)}" for k in within_keys)
        by_value.setdefault(name, []).append(row)
    return {name: selection_table(members, target, scores) for name, members in by_value.items()}
