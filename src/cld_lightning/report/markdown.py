"""``report.md``: a :class:`~cld_lightning.report.records.Report` as Markdown tables."""

from __future__ import annotations

import math

from cld_lightning.report.records import (
    ConfigRow,
    Interval,
    Paired,
    PairedEntry,
    Report,
    ScoreRank,
    Selection,
    Stat,
)

COLUMNS = (
    ("knn/top1", "kNN top-1"),
    ("knn/balanced_top1", "balanced kNN"),
    ("knn/many", "many"),
    ("knn/medium", "medium"),
    ("knn/few", "few"),
    ("knn/balanced_many", "bal. many"),
    ("knn/balanced_medium", "bal. medium"),
    ("knn/balanced_few", "bal. few"),
    ("linear/top1", "linear"),
    ("knn/pixel_top1", "pixels"),
    ("knn/pixel_balanced_top1", "pixels bal."),
    ("knn/random_init_top1", "untrained head"),
    ("knn/random_init_backbone_top1", "untrained backbone"),
    ("knn/random_init_backbone_balanced_top1", "untrained backbone bal."),
)


def fmt(stat: Stat | None, digits: int = 2) -> str:
    """``mean ± std`` (``mean`` for one value, ``–`` for none)."""
    if stat is None or not stat.known:
        return "–"
    if stat.n == 1:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def markdown(report: Report) -> str:
    """The report page: the configuration table, the label-free vs labelled choices (one section
    per ``--select-within`` group) and, with ``--pair``, the seed-matched comparison."""
    lines = [f"# cld-report: {report.root}", "", *_config_lines(report.configs)]
    if report.selection_within:
        lines += [
            "",
            "Label-free choices are compared only between runs on the same data "
            f"(`--select-within {' '.join(report.select_within or ())}`).",
        ]
    for name, selection in report.sections():
        lines += _selection_lines(selection, report.score, f" among {name}" if name else "")
    if report.paired:
        lines += _paired_lines(report.paired)
    return "\n".join(lines) + "\n"


def _config_lines(rows: list[ConfigRow]) -> list[str]:
    cols = [(m, t) for m, t in COLUMNS if any(m in r.metrics for r in rows)]
    lines = [
        "Mean ± std over finished seeds; the baselines (raw pixels, the untrained network) use "
        "the same kNN protocol.",
        "",
        "| " + " | ".join(["configuration", "seeds", *(t for _, t in cols)]) + " |",
        "|" + "---|" * (2 + len(cols)),
    ]
    for r in rows:
        seeds = f"{r.seeds}"
        if r.unfinished:
            now = ", ".join(f"{v:.2f} at step {s}" for s, v in r.latest)
            seeds += f" (+{r.unfinished} unfinished" + (f": {now})" if now else ")")
        cells = [r.config, seeds, *(fmt(r.metrics.get(m)) for m, _ in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _selection_lines(selection: Selection, score: str, where: str) -> list[str]:
    """One section: the labelled best, then each label-free score's ρ, τ, pick and regret beside
    a random pick's regret."""
    target = selection.target
    lines = ["", f"## Label-free choice vs {target}-best choice{where}", ""]
    if selection.best is None:
        return lines + [f"No finished run has {target}."]
    lines += [
        f"Best by {target} (labels): **{selection.best.config}** ({selection.best.value:.2f}).",
        "",
    ]
    noise = selection.noise
    ceiling = ""
    if noise:
        ceiling = f" (noise ceiling {noise.max_correlation:.2f})"
        lines += [
            f"Seed noise: {target} varies by {noise.seed_std:.2f} (std) between seeds of one "
            f"configuration ({noise.seed_dof} degrees of freedom) and by "
            f"{noise.config_std:.2f} between configurations: a score can correlate with these "
            f"means at most about {noise.max_correlation:.2f} (reliability "
            f"{noise.reliability:.2f}).",
            "",
        ]
    if selection.configs >= 2:
        lines += [
            f"A random pick among the {selection.configs} configurations has an expected regret "
            f"of {_num(selection.random_regret)}; a score whose regret is not below its random "
            "pick's chose no better than chance.",
            "",
        ]
    lines += [
        f"| label-free score | configurations | seeds | Spearman ρ vs {target}{ceiling} "
        f"| Kendall τ | picks | {target} there | regret | random pick: regret |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in selection.scores.items():
        lines.append(_score_row(name + (" (default)" if name == score else ""), s))
    return lines


def _score_row(name: str, s: ScoreRank) -> str:
    if not s.ranked:
        return f"| {name} | {s.n} | – | – | – | – | – | – | – |"
    seeds = f"{s.seeds_min}" if s.seeds_min == s.seeds_max else f"{s.seeds_min}–{s.seeds_max}"
    cells = [
        name,
        str(s.n),
        seeds,
        _num(s.spearman),
        _num(s.kendall),
        str(s.pick),
        _num(s.pick_value),
        _num(s.regret),
        _num(s.random_regret),
    ]
    return "| " + " | ".join(cells) + " |"


def interval_cell(interval: Interval | None) -> str:
    """``[low, high]`` of a mean change, ``within noise`` when it holds 0."""
    if interval is None:
        return "– (1 seed)"
    text = f"[{interval.low:+.2f}, {interval.high:+.2f}]"
    return text + (" within noise" if interval.within_noise else "")


def _change_cell(delta: Stat) -> str:
    if not delta.n:
        return "–"
    return f"{delta.mean:+.2f}" + (f" ± {delta.std:.2f}" if delta.n > 1 else "")


def _paired_lines(paired: Paired) -> list[str]:
    """``--pair``: per setting, the seed-matched change of the target with its interval, and of
    each score; then each score's totals."""
    key, target, decide_by = paired.key, paired.target, paired.decide_by
    names = list(dict.fromkeys(n for e in paired.settings for n in e.scores))
    level = f"{paired.level:.0%}"
    lines = [
        "",
        f"## Paired by {key}: does a label-free score move with {target}?",
        "",
        f"Runs that differ only in `{key}`, matched by seed. Change: mean ± std over the seed "
        f"pairs, with its {level} paired t interval (n - 1 degrees of freedom; *within noise*: the "
        f"interval holds 0, the sign is not established). Each score column: its mean change "
        f"and in how many pairs it moved the same way as {target}. Label-free choice: the side "
        f"where {decide_by} is higher (`--pair-score`).",
        "",
        "| setting | seeds | label-free choice | "
        + f"{target} base | other | change | {level} interval | "
        + " | ".join(names)
        + " |",
        "|" + "---|" * (7 + len(names)),
    ]
    lines += [_paired_row(e, names) for e in paired.settings]
    lines += _noise_summary(paired.settings)
    lines += [
        "",
        f"| label-free score | pairs where it moves with {target} | mean regret of its on/off choice |",
        "|---|---|---|",
    ]
    for n, o in paired.overall.items():
        mark = " (decides on/off)" if n == decide_by else ""
        lines.append(f"| {n}{mark} | {o.agree}/{o.pairs} | {o.mean_regret:.2f} |")
    for skip in paired.skipped:
        lines.append(f"\nSkipped {skip.setting}: {skip.reason}.")
    return lines


def _paired_row(e: PairedEntry, names: list[str]) -> str:
    cells = [
        e.setting,
        str(len(e.seeds)),
        e.label_free_choice or "–",
        f"{fmt(e.target_base)} ({e.base})",
        f"{fmt(e.target_other)} ({e.other})",
        _change_cell(e.delta),
        interval_cell(e.interval) if e.delta.n else "–",
    ]
    for n in names:
        sc = e.scores.get(n)
        cells.append("–" if sc is None else f"{sc.delta.mean:+.3g} ({sc.agree}/{sc.pairs})")
    return "| " + " | ".join(cells) + " |"


def _noise_summary(settings: list[PairedEntry]) -> list[str]:
    """How many comparisons are within noise, and how many rest on one seed."""
    labelled = [e for e in settings if e.delta.n]
    with_interval = [e for e in labelled if e.interval is not None]
    if not labelled:
        return []
    noisy = sum(e.interval.within_noise for e in with_interval if e.interval is not None)
    return [
        "",
        f"{noisy} of {len(with_interval)} comparisons with an interval are within noise; "
        f"{len(labelled) - len(with_interval)} rest on one seed (no interval: add seeds).",
    ]
