"""Statistics of the committed benchmark reports whose raw runs were never committed.

The "Where CLD pays" and label-free selection reports (``benchmarks/results/where_cld_pays``,
``benchmarks/results/selection_sweeps/<setting>``) were written before raw runs were kept; their
``report.json`` files still hold, per configuration, the mean, sample std and number of seeds of
every metric, and per seed-matched pair the mean, std and n of the differences. That is enough for
what the docs state about them, computed here with ``cld-report``'s own statistics:

- per on/off pair: the 95 % paired t interval of CLD's gain and whether it is within noise;
- per selection sweep and protocol: each score's regret beside a random pick's, counted over
  *distinct* comparisons (on balanced data the two kNN protocols are the same numbers);
- over the on/off pairs: in how many the retrieval score fell when CLD was turned on.

    python benchmarks/committed_statistics.py   # writes benchmarks/results/committed_statistics.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cld_lightning.report.stats import random_pick_regret, t_quantile

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROTOCOLS = {"knn": "", "balanced knn": "balanced_protocol"}
SWEEPS = ("balanced", "lt100", "subset4k")
OUT = RESULTS / "committed_statistics.json"


def interval(delta: dict[str, float], level: float = 0.95) -> dict[str, object]:
    """Paired t interval of a mean difference from its committed mean, sample std and n."""
    n, mean, std = int(delta["n"]), float(delta["mean"]), float(delta["std"])
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None, "within_noise": None}
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    return {"n": n, "mean": mean, "low": low, "high": high, "within_noise": low <= 0 <= high}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def pair_intervals() -> list[dict[str, object]]:
    """CLD's gain per where-CLD-pays setting and protocol, with its interval."""
    rows = []
    for protocol, sub in PROTOCOLS.items():
        report = load(RESULTS / "where_cld_pays" / sub / "report.json")
        for s in report["paired"]["settings"]:
            rows.append({"protocol": protocol, "setting": s["setting"], **interval(s["delta"])})
    return rows


def sweep_regrets() -> list[dict[str, object]]:
    """Each score's regret and a random pick's, per sweep and protocol (one comparison each)."""
    rows = []
    for sweep in SWEEPS:
        for protocol, sub in PROTOCOLS.items():
            report = load(RESULTS / "selection_sweeps" / sweep / sub / "report.json")
            target = report["selection"]["target"]
            values = [c["metrics"][target]["mean"] for c in report["configs"]]
            regrets = {k: v["regret"] for k, v in report["selection"]["scores"].items()}
            rows.append(
                {
                    "sweep": sweep,
                    "protocol": protocol,
                    "target": target,
                    "configurations": len(values),
                    "random_pick_regret": random_pick_regret(values),
                    "regrets": regrets,
                    "values": values,
                }
            )
    return rows


def distinct(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Drop a comparison whose target values repeat an earlier one's (balanced data: both
    protocols give the same kNN)."""
    seen: list[list[float]] = []
    out = []
    for row in rows:
        values = [round(v, 6) for v in row["values"]]
        if values not in seen:
            seen.append(values)
            out.append(row)
    return out


def mean_regrets(rows: list[dict[str, object]]) -> dict[str, float]:
    scores = rows[0]["regrets"].keys()
    return {s: sum(r["regrets"][s] for r in rows) / len(rows) for s in scores}


def retrieval_moves() -> dict[str, int]:
    """In how many on/off pairs (NPID-protocol reports) retrieval fell / rose with CLD on."""
    fell = rose = 0
    for path in [RESULTS / "where_cld_pays" / "report.json"] + [
        RESULTS / "selection_sweeps" / s / "report.json" for s in SWEEPS
    ]:
        for s in load(path)["paired"]["settings"]:
            d = s["scores"]["retrieval"]["delta"]["mean"]
            fell += d < 0
            rose += d > 0
    return {"fell": fell, "rose": rose, "pairs": fell + rose}


def main() -> None:
    sweeps = sweep_regrets()
    unique = distinct(sweeps)
    knn_only = [r for r in sweeps if r["protocol"] == "knn"]
    summary = {
        "pairs": pair_intervals(),
        "sweeps": [{k: v for k, v in r.items() if k != "values"} for r in sweeps],
        "distinct_comparisons": len(unique),
        "mean_regret_distinct": mean_regrets(unique),
        "mean_regret_npid_protocol": mean_regrets(knn_only),
        "mean_random_pick_regret_distinct": sum(r["random_pick_regret"] for r in unique)
        / len(unique),
        "retrieval_on_off": retrieval_moves(),
    }
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(OUT)
    for row in summary["pairs"]:
        if row["low"] is not None:
            noise = " within noise" if row["within_noise"] else ""
            print(
                f"{row['protocol']:13s} {row['setting'][:60]:60s} {row['mean']:+.2f} "
                f"[{row['low']:+.2f}, {row['high']:+.2f}]{noise}"
            )
    for r in sweeps:
        print(
            f"{r['sweep']:9s} {r['protocol']:13s} random {r['random_pick_regret']:.2f} "
            + " ".join(f"{k} {v:.2f}" for k, v in r["regrets"].items())
        )
    for key in ("mean_regret_distinct", "mean_regret_npid_protocol"):
        print(key, {k: round(v, 2) for k, v in summary[key].items()})
    print("random (distinct)", round(summary["mean_random_pick_regret_distinct"], 2))
    print("retrieval on/off", summary["retrieval_on_off"])


if __name__ == "__main__":
    main()
