"""The report as a W&B run of ``job_type="report"``: the tables, the curves and summary keys
(offline without credentials or network, never blocking)."""

from __future__ import annotations

from pathlib import Path

from cld_lightning.report.records import Paired, Report

SUMMARY_FIELDS = ("pick", "pick_value", "regret", "random_regret", "spearman", "kendall")


def summary_keys(report: Report) -> dict[str, object]:
    """The W&B run-summary entries of a report: best and label-free choice, per ``--select-within``
    group.

    Without ``--select-within`` the keys are ``report/best_config``, ``report/label_free_pick``...;
    with it, one set per group, ``report/<group>/best_config``..., and no all-runs choice
    (a score compared across data sets means nothing).
    """
    keys: dict[str, object] = {}
    for within, selection in report.sections():
        prefix = f"report/{within}/" if within else "report/"
        if selection.best:
            keys[prefix + "best_config"] = selection.best.config
            keys[prefix + "best_value"] = selection.best.value
        chosen = selection.scores.get(report.score)
        for k in SUMMARY_FIELDS if chosen is not None else ():
            if getattr(chosen, k) is not None:
                keys[f"{prefix}label_free_{k}"] = getattr(chosen, k)
    return keys


def _tables(report: Report) -> dict[str, object]:
    """``report/configs``, ``report/selection`` and, with ``--pair``, ``report/paired``."""
    payload = {"report/configs": _configs(report), "report/selection": _selection(report)}
    if report.paired:
        payload["report/paired"] = _paired(report.paired)
    return payload


def _configs(report: Report) -> object:
    import wandb

    cols = ["configuration", "seeds", *sorted({m for r in report.configs for m in r.metrics})]
    table = wandb.Table(columns=cols)
    for r in report.configs:
        means = [r.metrics[m].mean if m in r.metrics else None for m in cols[2:]]
        table.add_data(r.config, r.seeds, *means)
    return table


def _selection(report: Report) -> object:
    import wandb

    fields = ("n", "spearman", "kendall", "pick", "pick_value", "regret", "random_regret")
    table = wandb.Table(columns=["within", "score", "runs", *fields[1:]])
    for within, selection in report.sections():
        for name, s in selection.scores.items():
            table.add_data(within or "all runs", name, *(getattr(s, f) for f in fields))
    return table


def _paired(paired: Paired) -> object:
    import wandb

    cols = ["setting", "seeds", "target_change", "low", "high", "within_noise", "score"]
    table = wandb.Table(columns=[*cols, "score_change", "agree", "pairs", "choice", "regret"])
    for e in paired.settings:
        ci = e.interval
        bounds = (ci.low, ci.high, ci.within_noise) if ci else (None, None, None)
        head = (e.setting, len(e.seeds), e.delta.mean, *bounds)
        for name, sc in e.scores.items():
            score = (name, sc.delta.mean, sc.agree, sc.pairs, sc.choice, sc.regret)
            table.add_data(*head, *score)
    return table


def log_to_wandb(report: Report, out: Path, png: Path | None, mode: str | None) -> str:
    """The tables (and the curves) as a W&B run of ``job_type="report"``; returns the mode."""
    import wandb

    from cld_lightning.app.loggers import resolve_wandb_mode

    resolved = resolve_wandb_mode(mode)
    if resolved == "disabled":
        return resolved
    root = Path(report.root)
    run = wandb.init(
        project="cld-lightning",
        job_type="report",
        name=f"report-{root.name}",
        group=root.name,
        dir=str(out),
        mode=resolved,
        reinit="finish_previous",
    )
    payload = _tables(report)
    if png is not None:
        payload["report/curves"] = wandb.Image(str(png))
    run.log(payload)
    for key, value in summary_keys(report).items():
        run.summary[key] = value
    run.finish()
    return resolved
