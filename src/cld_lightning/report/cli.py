"""``cld-report <multirun or runs folder>``: what a sweep found, in one page.

Writes into ``--out`` (default ``<folder>/report``): ``report.md`` (the tables), ``report.json``
(every figure), ``curves.png`` (kNN top-1 against optimiser steps, mean over seeds, with the
baselines) and, when the runs were logged to W&B (or ``--wandb`` asks for it), the same tables in
a W&B run of ``job_type="report"`` (offline without credentials or network, never blocking).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from cld_lightning.eval.selection import SCORES
from cld_lightning.report.paired import ON_OFF_SCORE, paired_differences
from cld_lightning.report.runs import ReportInputError, RunRecord, find_runs
from cld_lightning.report.summary import (
    BASELINES,
    group_runs,
    selection_table,
    selection_within,
    summarize,
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


def _fmt(stat: dict | None, digits: int = 2) -> str:
    if not stat or stat.get("n", 0) == 0 or not math.isfinite(stat["mean"]):
        return "–"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown(
    rows: Sequence[dict],
    selection: dict,
    score: str,
    root: Path,
    within: dict[str, dict] | None = None,
    within_keys: Sequence[str] = (),
    paired: dict | None = None,
) -> str:
    """The report page: the configuration table and the label-free vs labelled choices (one
    section per data setting when ``within`` holds ``selection_within``'s tables; the seed-matched
    comparison when ``paired`` holds ``paired_differences``' result)."""
    cols = [(m, t) for m, t in COLUMNS if any(m in r["metrics"] for r in rows)]
    lines = [f"# cld-report: {root}", ""]
    lines += [
        "Mean ± std over finished seeds; the baselines (raw pixels, the untrained network) use "
        "the same kNN protocol.",
        "",
        "| " + " | ".join(["configuration", "seeds", *(t for _, t in cols)]) + " |",
        "|" + "---|" * (2 + len(cols)),
    ]
    for r in rows:
        seeds = f"{r['seeds']}"
        if r["unfinished"]:
            now = ", ".join(f"{v:.2f} at step {s}" for s, v in r["latest"])
            seeds += f" (+{r['unfinished']} unfinished" + (f": {now})" if now else ")")
        cells = [r["config"], seeds, *(_fmt(r["metrics"].get(m)) for m, _ in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    if within:
        lines += [
            "",
            "Label-free choices are compared only between runs on the same data "
            f"(`--select-within {' '.join(within_keys)}`).",
        ]
        for name, sel in within.items():
            lines += _selection_lines(sel, score, f" among {name}")
    else:
        lines += _selection_lines(selection, score, "")
    if paired:
        lines += _paired_lines(paired, score)
    return "\n".join(lines) + "\n"


def _paired_lines(paired: dict, score: str) -> list[str]:
    """``--pair``: per setting, the seed-matched change of the target and of each score."""
    key, target, decide_by = paired["key"], paired["target"], paired["decide_by"]
    names = list(dict.fromkeys(n for e in paired["settings"] for n in e["scores"]))
    lines = [
        "",
        f"## Paired by {key}: does a label-free score move with {target}?",
        "",
        f"Runs that differ only in `{key}`, matched by seed. Each score column: its mean change "
        f"and in how many pairs it moved the same way as {target}. Label-free choice: the side "
        f"where {decide_by} is higher (`--pair-score`).",
        "",
        "| setting | seeds | label-free choice | "
        + f"{target} base | other | change | "
        + " | ".join(names)
        + " |",
        "|" + "---|" * (6 + len(names)),
    ]
    for e in paired["settings"]:
        cells = [
            e["setting"],
            str(len(e["seeds"])),
            e.get("label_free_choice", "–"),
            f"{_fmt(e['target_base'])} ({e['base']})",
            f"{_fmt(e['target_other'])} ({e['other']})",
            "–"
            if not e["delta"]["n"]
            else f"{e['delta']['mean']:+.2f}"
            + (f" ± {e['delta']['std']:.2f}" if e["delta"]["n"] > 1 else ""),
        ]
        for n in names:
            sc = e["scores"].get(n)
            cells.append(
                "–" if sc is None else f"{sc['delta']['mean']:+.3g} ({sc['agree']}/{sc['pairs']})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| label-free score | pairs where it moves with {target} | mean regret of its on/off choice |",
        "|---|---|---|",
    ]
    for n, o in paired["overall"].items():
        mark = " (decides on/off)" if n == decide_by else ""
        lines.append(f"| {n}{mark} | {o['agree']}/{o['pairs']} | {o['mean_regret']:.2f} |")
    for skip in paired["skipped"]:
        lines.append(f"\nSkipped {skip['setting']}: {skip['reason']}.")
    return lines


def _selection_lines(selection: dict, score: str, where: str) -> list[str]:
    """One section: the labelled best, then each label-free score's ρ, pick and regret."""
    target = selection["target"]
    lines = ["", f"## Label-free choice vs {target}-best choice{where}", ""]
    if "best" not in selection:
        return lines + [f"No finished run has {target}."]
    lines += [
        f"Best by {target} (labels): **{selection['best']['config']}** "
        f"({selection['best']['value']:.2f}).",
        "",
    ]
    noise = selection.get("noise")
    if noise:
        lines += [
            f"Seed noise: {target} varies by {noise['seed_std']:.2f} (std) between seeds of one "
            f"configuration ({noise['seed_dof']} degrees of freedom) and by "
            f"{noise['config_std']:.2f} between configurations: a score can correlate with these "
            f"means at most about {noise['max_correlation']:.2f} (reliability "
            f"{noise['reliability']:.2f}).",
            "",
        ]
    lines += [
        f"| label-free score | runs | Spearman ρ vs {target} | picks | {target} there | regret |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in selection["scores"].items():
        mark = " (default)" if name == score else ""
        if "spearman" not in s:
            lines.append(f"| {name}{mark} | {s['n']} | – | – | – | – |")
            continue
        rho = "–" if math.isnan(s["spearman"]) else f"{s['spearman']:.2f}"
        lines.append(
            f"| {name}{mark} | {s['n']} | {rho} | {s['pick']} | {s['pick_value']:.2f} "
            f"| {s['regret']:.2f} |"
        )
    return lines


def plot_curves(runs: Sequence[RunRecord], rows: Sequence[dict], path: Path, metric: str) -> bool:
    """``metric`` against optimiser steps, mean over seeds per configuration; baselines dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(runs)
    by_key = {tuple(r["overrides"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(11, 5))
    drawn = False
    styles = {
        "knn/pixel_top1": ("--", "raw pixels"),
        "knn/random_init_top1": (":", "untrained head"),
        "knn/random_init_backbone_top1": ("-.", "untrained backbone"),
    }
    baselines_drawn: set[tuple] = set()
    for key, members in groups.items():
        by_step: dict[int, list[float]] = {}
        for r in members:
            for step, value in r.curves.get(metric, []):
                by_step.setdefault(step, []).append(value)
        if not by_step:
            continue
        steps = sorted(by_step)
        means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
        row = by_key[key]
        (line,) = ax.plot(
            steps, means, marker=".", lw=1, label=f"{row['config']} (n={len(members)})"
        )
        drawn = True
        # baselines belong to a data set: one set of lines per distinct set of values, in the
        # colour of the first configuration that has it
        values = tuple(
            round(row["metrics"][b]["mean"], 2) if row["metrics"].get(b, {}).get("n") else None
            for b in BASELINES
        )
        if metric != "knn/top1" or values in baselines_drawn or all(v is None for v in values):
            continue
        baselines_drawn.add(values)
        for b, v in zip(BASELINES, values, strict=True):
            if v is not None:
                ls, what = styles[b]
                ax.axhline(
                    v,
                    color=line.get_color(),
                    ls=ls,
                    lw=0.8,
                    alpha=0.7,
                    label=f"{what}, as {row['config']}",
                )
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(metric + " (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summary_keys(report: dict) -> dict[str, object]:
    """The W&B run-summary entries of a report: best and label-free choice, per ``--select-within`` group.

    Without ``--select-within`` the keys are ``report/best_config``, ``report/label_free_pick``...;
    with it, one set per group, ``report/<group>/best_config``..., and no all-runs choice
    (a score compared across data sets means nothing).
    """
    sections = report.get("selection_within") or {"": report["selection"]}
    keys: dict[str, object] = {}
    for within, selection in sections.items():
        prefix = f"report/{within}/" if within else "report/"
        best = selection.get("best")
        if best:
            keys[prefix + "best_config"] = best["config"]
            keys[prefix + "best_value"] = best["value"]
        chosen = selection["scores"].get(report["score"], {})
        for k in ("pick", "pick_value", "regret", "spearman"):
            if k in chosen:
                keys[f"{prefix}label_free_{k}"] = chosen[k]
    return keys


def log_to_wandb(report: dict, out: Path, root: Path, png: Path | None, mode: str | None) -> str:
    """The tables (and the curves) as a W&B run of ``job_type="report"``; returns the mode."""
    import wandb

    from cld_lightning.app.loggers import resolve_wandb_mode

    resolved = resolve_wandb_mode(mode)
    if resolved == "disabled":
        return resolved
    run = wandb.init(
        project="cld-lightning",
        job_type="report",
        name=f"report-{root.name}",
        group=root.name,
        dir=str(out),
        mode=resolved,
        reinit="finish_previous",
    )
    cols = ["configuration", "seeds", *sorted({m for r in report["configs"] for m in r["metrics"]})]
    table = wandb.Table(columns=cols)
    for r in report["configs"]:
        table.add_data(
            r["config"], r["seeds"], *[r["metrics"].get(m, {}).get("mean") for m in cols[2:]]
        )
    sel = wandb.Table(
        columns=["within", "score", "runs", "spearman", "pick", "pick_value", "regret"]
    )
    sections = report.get("selection_within") or {"all runs": report["selection"]}
    for within, selection in sections.items():
        for name, s in selection["scores"].items():
            sel.add_data(
                within,
                name,
                s["n"],
                s.get("spearman"),
                s.get("pick"),
                s.get("pick_value"),
                s.get("regret"),
            )
    payload = {"report/configs": table, "report/selection": sel}
    if report.get("paired"):
        cols = ["setting", "seeds", "target_change", "score", "score_change", "agree", "pairs"]
        pairs = wandb.Table(columns=[*cols, "choice", "regret"])
        for e in report["paired"]["settings"]:
            for name, sc in e["scores"].items():
                pairs.add_data(
                    e["setting"],
                    len(e["seeds"]),
                    e["delta"]["mean"],
                    name,
                    sc["delta"]["mean"],
                    sc["agree"],
                    sc["pairs"],
                    sc["choice"],
                    sc["regret"],
                )
        payload["report/paired"] = pairs
    if png is not None:
        payload["report/curves"] = wandb.Image(str(png))
    run.log(payload)
    for key, value in summary_keys(report).items():
        run.summary[key] = value
    run.finish()
    return resolved


def build_report(
    root: Path,
    score: str,
    target: str,
    label_keys: Sequence[str] = (),
    within_keys: Sequence[str] = (),
    pair_key: str | None = None,
    pair_score: str = ON_OFF_SCORE,
) -> tuple[list[RunRecord], dict]:
    runs = find_runs(root)
    rows = summarize(runs, label_keys)
    for row in rows:  # run folders relative to the report's folder (the JSON travels)
        row["paths"] = [str(Path(p).relative_to(root)) for p in row["paths"]]
    selection = selection_table(rows, target=target)
    report = {
        "root": str(root),
        "score": score,
        "runs": len(runs),
        "finished": sum(r.finished for r in runs),
        "configs": rows,
        "selection": selection,
    }
    if within_keys:
        report["select_within"] = list(within_keys)
        report["selection_within"] = selection_within(rows, group_runs(runs), within_keys, target)
    if pair_key:
        report["paired"] = paired_differences(
            runs, pair_key, target, name_keys=label_keys, decide_by=pair_score
        )
    return runs, report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cld-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("folder", type=Path, help="a Hydra multirun folder or a folder of run folders")
    p.add_argument("--out", type=Path, default=None, help="where to write (default FOLDER/report)")
    p.add_argument(
        "--score",
        default="retrieval",
        choices=SCORES,
        help="the label-free score whose pick is the default choice",
    )
    p.add_argument("--target", default="knn/top1", help="the labelled metric to compare against")
    p.add_argument(
        "--wandb",
        choices=("auto", "off", "offline", "online"),
        default="auto",
        help="auto: log to W&B when the runs were logged there",
    )
    p.add_argument(
        "--label",
        nargs="+",
        default=[],
        metavar="KEY",
        help="name configurations by these config keys (e.g. cld.enabled data.imbalance_ratio)",
    )
    p.add_argument(
        "--select-within",
        nargs="+",
        default=[],
        metavar="KEY",
        help="compare label-free scores only between runs with equal values of these config keys "
        "(e.g. data.dataset data.imbalance_ratio: one choice per data set)",
    )
    p.add_argument(
        "--pair",
        default=None,
        metavar="KEY",
        help="compare runs that differ only in this config key (e.g. cld.enabled), matched by "
        "seed, and whether each label-free score moves with the target",
    )
    p.add_argument(
        "--pair-score",
        default=ON_OFF_SCORE,
        choices=SCORES,
        help=f"the label-free score whose change decides between the two sides "
        f"(default {ON_OFF_SCORE}: the lowest regret of the scores measured; keeping CLD on did "
        "better still, docs/BENCHMARKS.md)",
    )
    args = p.parse_args(argv)
    try:
        runs, report = build_report(
            args.folder,
            args.score,
            args.target,
            args.label,
            args.select_within,
            args.pair,
            args.pair_score,
        )
    except ReportInputError as e:
        print(f"cld-report: {e}", file=sys.stderr)
        return 2
    out = args.out or args.folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    png = out / "curves.png"
    if not plot_curves(runs, report["configs"], png, args.target):
        png = None
    report["curves_png"] = str(png) if png else None
    page = markdown(
        report["configs"],
        report["selection"],
        args.score,
        args.folder,
        report.get("selection_within"),
        args.select_within,
        report.get("paired"),
    )
    (out / "report.md").write_text(page)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    wandb_wanted = args.wandb in ("offline", "online") or (
        args.wandb == "auto" and any(r.logged_to_wandb for r in runs)
    )
    if wandb_wanted:
        mode = None if args.wandb == "auto" else args.wandb
        report["wandb_mode"] = log_to_wandb(report, out, args.folder, png, mode)
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(page)
    print(f"written: {out / 'report.md'}, {out / 'report.json'}" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
