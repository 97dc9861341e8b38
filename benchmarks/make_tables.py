"""Render the benchmark tables of docs/BENCHMARKS.md (markdown) from benchmarks/results/*.json."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def step_time() -> str:
    d = load("step_time.json")
    if d is None:
        return ""
    rows = [
        "| width | config | views/crops | CLD | s/step | img/s | step peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["results"]:
        rows.append(
            f"| {r['width']} | {r['config']} | {r['views']} | {'yes' if r['cld'] else 'no'} | "
            f"{r['step_time_s']:.3f} | {r['img_per_s']:.0f} | {r['step_peak_rss_mb']:.0f} |"
        )
    rows += ["", "| ratio (CLD / base) | width 16 | width 64 |", "|---|---|---|"]
    names = sorted({k[4:] for k in d["ratios"]})
    for n in names:
        a, b = d["ratios"].get(f"w16_{n}"), d["ratios"].get(f"w64_{n}")
        rows.append(f"| `{n}` | {a:.3f} | {b:.3f} |")
    return "\n".join(rows)


def fmnist_experiment() -> str:
    d = load("fmnist_cld_experiment.json")
    if d is None or not d.get("summary"):
        return ""
    rows = ["| data | NPID (2 views) | NPID+CLD (2 views) |", "|---|---|---|"]

    def cell(entry: dict, key: str) -> str:
        v = entry.get(key)
        return f"{v['mean']:.1f} ± {v['std']:.1f} (n={v['n']})" if v else "–"

    for setting in d["config"]["settings"]:
        a = d["summary"].get(f"{setting}/npid", {})
        b = d["summary"].get(f"{setting}/npid_cld", {})
        rows.append(f"| {setting} kNN top-1 | {cell(a, 'knn/top1')} | {cell(b, 'knn/top1')} |")
        for g in ("many", "medium", "few") if setting.startswith("long_tail") else ():
            if f"knn/{g}" in a or f"knn/{g}" in b:
                rows.append(
                    f"| {setting} {g}-shot | {cell(a, f'knn/{g}')} | {cell(b, f'knn/{g}')} |"
                )
    return "\n".join(rows)


def selection() -> str:
    d = load("selection_sweep.json")
    if d is None or "spearman_vs_knn_top1" not in d:
        return ""
    rows = ["| label-free criterion | Spearman ρ vs kNN top-1 | p |", "|---|---|---|"]
    for k, v in d["spearman_vs_knn_top1"].items():
        rows.append(f"| {k} | {v['rho']:.2f} | {v['p']:.3f} |")
    s = d["selected_by_label_free_score"]
    rows.append("")
    rows.append(
        f"Runs: {len(d['runs'])}; kNN top-1 of the run picked by `label_free_score`: "
        f"{s['knn/top1']:.1f} (best {s['best_knn/top1']:.1f}, median "
        f"{s['median_knn/top1']:.1f}); picked {' '.join(s['overrides'])}."
    )
    return "\n".join(rows)


def data_throughput() -> str:
    d = load("data_throughput.json")
    return "" if d is None else "(see benchmarks/results/data_throughput.json)"


def gpu_smoke() -> str:
    d = load("gpu_smoke_h100.json")
    if d is None:
        return ""
    rows = [
        f"{d['device']}, torch {d['torch']}, NPID+CLD, CIFAR ResNet-18 width {d['width']}, "
        f"batch {d['batch_size']} (2 views), 30 steps:",
        "",
        "| precision | strategy | s/step | batches x 256 img/s | peak GPU MiB | CLD loss dtype |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["runs"]:
        rows.append(
            f"| {r['precision']} | {r['strategy']} | {r['step_time_s']:.4f} | "
            f"{r['images_per_s']:.0f} | {r.get('peak_memory_mib', float('nan')):.0f} | "
            f"{','.join(r['cld_loss_dtypes'])} |"
        )
    return "\n".join(rows)


def mean_std(v: dict, seeds: int, digits: int) -> str:
    """``mean ± std`` of a ``{"mean", "std"}`` summary (the mean alone for one seed)."""
    if seeds > 1:
        return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}"
    return f"{v['mean']:.{digits}f}"


def npid_ablation() -> str:
    d = load("npid_ablation.json")
    if d is None:
        return ""
    rows = [
        "| row | change (one per row, vs row `base`) | seeds | NPID kNN top-1 | untrained head "
        "/ backbone | raw pixels | learned − untrained head |",
        "|---|---|---|---|---|---|---|",
    ]

    for name, r in d["summary"].items():
        n = r["seeds"]
        rows.append(
            f"| `{name}` | {r['label']} | {n} | {mean_std(r['knn/top1'], n, 1)} | "
            f"{r['knn/random_init_top1']['mean']:.1f} / "
            f"{r['knn/random_init_backbone_top1']['mean']:.1f} | "
            f"{r['knn/pixel_top1']['mean']:.1f} | {r['top1_minus_untrained']:+.1f} |"
        )
    return "\n".join(rows)


def learning_curves_summary() -> str:
    """Per setting and method: last and best epoch's kNN over the finished seeds (mean ± std),
    and the same memory/test sets' baselines."""
    d = load("learning_curves.json")
    if d is None:
        return ""
    rows = [
        "| setting / method | seeds | epochs | last epoch kNN | best epoch kNN | raw pixels | "
        "untrained head / backbone |",
        "|---|---|---|---|---|---|---|",
    ]

    for name, r in d.get("summary", {}).items():
        n = r["seeds"]
        rows.append(
            f"| `{name}` | {n} | {r['epochs']} | {mean_std(r['last'], n, 2)} | {mean_std(r['best'], n, 2)} | "
            f"{r['pixel_top1']} | {r['random_init_top1']} / {r['random_init_backbone_top1']} |"
        )
    return "\n".join(rows)


def learning_curves() -> str:
    d = load("learning_curves.json")
    if d is None:
        return ""
    rows = [
        "| run | epochs done | last epoch kNN | best epoch kNN (epoch) | status |",
        "|---|---|---|---|---|",
    ]
    for key, r in d["runs"].items():
        acc, epochs = r.get("knn_top1") or [], r.get("epochs") or []
        if not acc:
            rows.append(f"| `{key}` | 0 | – | – | {r.get('status', '')} |")
            continue
        best = max(range(len(acc)), key=acc.__getitem__)
        rows.append(
            f"| `{key}` | {epochs[-1]} | {acc[-1]:.2f} | {acc[best]:.2f} ({epochs[best]}) | "
            f"{r.get('status', '')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    for title, fn in (
        ("step time", step_time),
        ("F-MNIST experiment", fmnist_experiment),
        ("selection", selection),
        ("GPU smoke", gpu_smoke),
        ("NPID ablation", npid_ablation),
        ("learning curves (summary)", learning_curves_summary),
        ("learning curves", learning_curves),
    ):
        print(f"### {title}\n\n{fn()}\n")
