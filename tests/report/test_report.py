"""cld-report: grouping over seeds, baselines beside each configuration, Spearman and regret of
each label-free score, the written files, and clear errors for bad folders."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cld_lightning.report import cli, find_runs, selection_table, spearman, summarize
from cld_lightning.report.cli import build_report, main
from cld_lightning.report.wandb_log import summary_keys


def write_run(
    root: Path, name: str, overrides: list[str], metrics: dict | None, curve: list | None = None
) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if curve:
        csv_dir = run / "csv" / "version_0"
        csv_dir.mkdir(parents=True)
        rows = ["epoch,knn/top1,step,train/loss"] + [f"0,{v},{s}," for s, v in curve]
        rows.insert(1, "0,,5,1.5")  # a training row: no kNN, ignored
        (csv_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """3 configurations x 2 seeds (+1 unfinished); retrieval ranks them like kNN, RankMe inverts."""
    root = tmp_path / "multirun"
    knn = {0.0: (70.0, 72.0), 0.5: (75.0, 77.0), 1.0: (73.0, 73.0)}
    retrieval = {0.0: 10.0, 0.5: 30.0, 1.0: 20.0}
    rankme = {0.0: 9.0, 0.5: 3.0, 1.0: 5.0}
    i = 0
    for lam, accs in knn.items():
        for seed, acc in enumerate(accs):
            m = {
                "knn/top1": acc,
                "selection/retrieval_top1": retrieval[lam] + seed,
                "selection/rankme": rankme[lam],
            }
            if lam == 0.0:  # baselines in one configuration only (as a sweep computes them)
                m |= {"knn/pixel_top1": 60.0 + seed, "knn/random_init_top1": 40.0}
            write_run(
                root,
                str(i),
                ["experiment=x", f"cld.weight={lam}", f"seed={seed}", "logger=csv"],
                m,
                curve=[(100, acc - 10), (200, acc)],
            )
            i += 1
    write_run(root, str(i), ["experiment=x", "cld.weight=1.0", "seed=2"], None, [(100, 50.0)])
    return root


def test_groups_seeds_means_and_baselines(sweep: Path) -> None:
    runs = find_runs(sweep)
    assert len(runs) == 7 and sum(r.finished for r in runs) == 6
    rows = {r.config: r for r in summarize(runs)}
    assert set(rows) == {"cld.weight=0.0", "cld.weight=0.5", "cld.weight=1.0"}
    half = rows["cld.weight=0.5"]
    assert half.seeds == 2 and half.unfinished == 0
    assert half.metrics["knn/top1"].mean == pytest.approx(76.0)
    assert half.metrics["knn/top1"].std == pytest.approx(math.sqrt(2.0))
    assert rows["cld.weight=1.0"].unfinished == 1
    # baselines computed once reach every configuration with the same data overrides
    assert half.metrics["knn/pixel_top1"].mean == pytest.approx(60.5)
    assert half.baselines_from == "runs with the same data overrides"
    assert rows["cld.weight=0.0"].baselines_from == "own runs"


def test_selection_spearman_pick_and_regret(sweep: Path) -> None:
    sel = selection_table(summarize(find_runs(sweep)), scores=("retrieval", "rankme", "group"))
    assert (sel.best.config, sel.best.value) == ("cld.weight=0.5", pytest.approx(76.0))
    r = sel.scores["retrieval"]
    assert r.spearman == pytest.approx(1.0) and r.pick == "cld.weight=0.5"
    assert r.regret == pytest.approx(0.0)
    k = sel.scores["rankme"]  # RankMe picks λ = 0 (71.0): regret 5.0, ρ = -1
    assert k.spearman == pytest.approx(-1.0) and k.pick == "cld.weight=0.0"
    assert k.regret == pytest.approx(5.0)
    assert sel.scores["group"].n == 0  # no run has it: said, not invented


def test_seed_noise_bounds_the_reachable_correlation(sweep: Path) -> None:
    """The fixture's kNN: λ 0 -> 70, 72; λ 0.5 -> 75, 77; λ 1 -> 73, 73. Pooled seed variance
    (2 + 2 + 0) / 3 = 4/3; variance of the means (71, 76, 73) = 19/3; noise in a 2-seed mean
    (4/3) / 2 = 2/3; reliability 1 - (2/3) / (19/3) = 17/19."""
    rows = summarize(find_runs(sweep))
    noise = selection_table(rows, scores=("retrieval",)).noise
    assert noise.seed_std == pytest.approx(math.sqrt(4 / 3))
    assert noise.seed_dof == 3
    assert noise.config_std == pytest.approx(math.sqrt(19 / 3))
    assert noise.reliability == pytest.approx(17 / 19)
    assert noise.max_correlation == pytest.approx(math.sqrt(17 / 19))
    one_seed = summarize([r for r in find_runs(sweep) if "seed=0" in r.overrides])
    assert selection_table(one_seed, scores=("retrieval",)).noise is None  # nothing to pool


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for _ in range(20):
        x = [rng.choice([1.0, 2.0, 3.0, 4.5]) for _ in range(12)]
        y = [rng.random() + (xi if rng.random() < 0.7 else 0) for xi in x]
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal-length"):
        spearman([1, 2], [1])


def test_cli_writes_tables_json_and_curves(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rep"
    assert main([str(sweep), "--out", str(out), "--wandb", "off"]) == 0
    page = (out / "report.md").read_text()
    assert "| cld.weight=0.5 | 2 | 76.00 ± 1.41 | 60.50 ± 0.71 | 40.00 ± 0.00 |" in page
    assert "| cld.weight=1.0 | 2 (+1 unfinished: 50.00 at step 100) |" in page
    # configurations, seeds, ρ, τ, pick, its kNN, regret, a random pick's regret (76 - 220/3)
    assert (
        "| retrieval (default) | 3 | 2 | 1.00 | 1.00 | cld.weight=0.5 | 76.00 | 0.00 | 2.67 |"
        in page
    )
    report = json.loads((out / "report.json").read_text())
    assert report["runs"] == 7 and report["finished"] == 6
    assert (out / "curves.png").stat().st_size > 10_000
    assert "cld-report" in capsys.readouterr().out


def test_clear_errors(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope: not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no run found" in capsys.readouterr().err
    bad = write_run(tmp_path / "bad", "0", ["seed=0"], None)
    (bad / "metrics.json").write_text("{not json")
    assert main([str(tmp_path / "bad")]) == 2
    assert f"{bad / 'metrics.json'}: not valid JSON" in capsys.readouterr().err


def test_label_keys_name_configurations_by_composed_config(sweep: Path) -> None:
    for run in find_runs(sweep):  # Hydra writes the composed config beside the overrides
        lam = next(o for o in run.overrides if o.startswith("cld.weight=")).split("=")[1]
        (run.path / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"cld": {"weight": float(lam), "enabled": True}})
        )
    rows = summarize(find_runs(sweep), label_keys=["cld.enabled", "cld.weight", "cld.nope"])
    assert [r.config for r in rows] == [f"cld.weight={w}" for w in (0.0, 0.5, 1.0)]  # varies
    one = summarize(find_runs(sweep)[:1], label_keys=["cld.enabled", "cld._target_"])
    assert one[0].config == "cld.enabled=True cld=None"  # one configuration: every key


def test_select_within_compares_runs_on_the_same_data_only(tmp_path: Path, capsys) -> None:
    """Two data sets, base vs CLD on each. The retrieval score is not comparable across data
    sets (here higher on the set with the lower kNN), so across them it picks the hard set's run
    with a 35-point regret; within each set it picks the better run."""
    root = tmp_path / "runs"
    # (dataset, cld) -> (kNN top-1, retrieval score)
    table = {
        ("easy", False): (90.0, 60.0),
        ("easy", True): (88.0, 58.0),
        ("hard", False): (50.0, 70.0),
        ("hard", True): (55.0, 75.0),
    }
    for i, ((data, cld), (knn, score)) in enumerate(table.items()):
        run = write_run(
            root,
            f"r{i}",
            [f"data={data}", f"cld.enabled={cld}", "seed=0"],
            {"knn/top1": knn, "selection/retrieval_top1": score},
        )
        (run / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"data": {"dataset": data}, "cld": {"enabled": cld}})
        )
    out = tmp_path / "report"
    args = [str(root), "--out", str(out), "--wandb", "off", "--label", "cld.enabled"]
    assert main([*args, "--select-within", "data.dataset"]) == 0
    report = json.loads((out / "report.json").read_text())
    within = report["selection_within"]
    assert list(within) == ["data.dataset=easy", "data.dataset=hard"]
    easy, hard = (within[k]["scores"]["retrieval"] for k in within)
    assert (easy["pick_value"], easy["regret"], easy["n"]) == (90.0, 0.0, 2)
    assert (hard["pick_value"], hard["regret"], hard["n"]) == (55.0, 0.0, 2)
    assert hard["spearman"] == pytest.approx(1.0)
    overall = report["selection"]["scores"]["retrieval"]  # without --select-within's grouping
    assert (overall["n"], overall["pick_value"], overall["regret"]) == (4, 55.0, 35.0)
    page = (out / "report.md").read_text()
    assert "among data.dataset=hard" in page and "among data.dataset=easy" in page
    _, typed = build_report(root, label_keys=["cld.enabled"], within_keys=["data.dataset"])
    keys = summary_keys(typed)  # W&B summary: one choice per data set, none across them
    assert keys["report/data.dataset=easy/label_free_pick_value"] == 90.0
    assert keys["report/data.dataset=hard/label_free_regret"] == 0.0
    assert keys["report/data.dataset=hard/best_value"] == 55.0
    assert not any(k.startswith("report/label_free") or k == "report/best_config" for k in keys)
    capsys.readouterr()


def test_summary_keys_without_select_within(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--wandb", "off"]) == 0
    keys = summary_keys(build_report(sweep)[1])
    # best configuration: cld.weight=0.5 (mean 76); retrieval picks it too, RankMe is not default
    assert keys["report/best_value"] == 76.0
    assert keys["report/label_free_pick_value"] == 76.0
    assert keys["report/label_free_regret"] == 0.0
    assert "cld.weight=0.5" in keys["report/label_free_pick"]
    capsys.readouterr()


def _pair_run(root: Path, name: str, data: str, cld: bool, seed: int, metrics: dict) -> None:
    overrides = [f"data={data}", *([] if cld else ["cld=off"]), f"seed={seed}"]
    run = write_run(root, name, overrides, metrics)
    (run / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"data": {"dataset": data}, "cld": {"enabled": cld}})
    )


def test_pair_matches_seeds_and_counts_sign_agreement(tmp_path: Path, capsys) -> None:
    """CLD on vs off on two data sets, 2 seeds each (+1 data set with CLD only: skipped).
    kNN gains from CLD: easy +1, +3 (mean +2); hard -2, +1 (mean -0.5). Retrieval always drops
    with CLD, RankMe follows kNN's sign in every pair."""
    root = tmp_path / "runs"
    knn = {("easy", 0): (80.0, 81.0), ("easy", 1): (79.0, 82.0),
           ("hard", 0): (60.0, 58.0), ("hard", 1): (61.0, 62.0)}  # fmt: skip
    for i, ((data, seed), (off, on)) in enumerate(knn.items()):
        for cld, acc in ((False, off), (True, on)):
            rankme = 10.0 + (acc - off)  # moves with the kNN change
            retrieval = 50.0 - 5.0 * cld
            metrics = {"knn/top1": acc, "selection/retrieval_top1": retrieval,
                       "selection/rankme": rankme}  # fmt: skip
            _pair_run(root, f"r{i}_{int(cld)}", data, cld, seed, metrics)
    _pair_run(root, "lonely", "odd", True, 0, {"knn/top1": 1.0, "selection/rankme": 1.0})
    out = tmp_path / "report"
    args = [str(root), "--out", str(out), "--wandb", "off", "--label", "data.dataset"]
    assert main([*args, "--pair", "cld.enabled", "--pair-score", "rankme"]) == 0
    paired = json.loads((out / "report.json").read_text())["paired"]
    easy, hard = paired["settings"]
    assert (easy["setting"], easy["seeds"]) == ("data.dataset=easy", ["0", "1"])
    assert (easy["base"], easy["other"]) == ("cld.enabled=False", "cld.enabled=True")
    assert easy["delta"]["mean"] == pytest.approx(2.0)
    assert hard["delta"]["mean"] == pytest.approx(-0.5)
    r_easy, r_hard = easy["scores"]["retrieval"], hard["scores"]["retrieval"]
    assert (r_easy["agree"], r_easy["pairs"], r_hard["agree"], r_hard["pairs"]) == (0, 2, 1, 2)
    # retrieval prefers CLD off on both: regret 2 on easy (means 79.5 off, 81.5 on), 0 on hard
    assert r_easy["choice"] == "cld.enabled=False" and r_easy["regret"] == pytest.approx(2.0)
    assert r_hard["regret"] == pytest.approx(0.0)
    m_easy, m_hard = easy["scores"]["rankme"], hard["scores"]["rankme"]
    assert (m_easy["agree"], m_hard["agree"]) == (2, 2)
    assert m_easy["choice"] == "cld.enabled=True" and m_hard["choice"] == "cld.enabled=False"
    assert paired["overall"]["rankme"] == {"agree": 4, "pairs": 4, "mean_regret": 0.0}
    assert paired["overall"]["retrieval"]["agree"] == 1
    assert paired["overall"]["retrieval"]["mean_regret"] == pytest.approx(1.0)
    assert paired["skipped"] == [
        {"setting": "data.dataset=odd", "reason": "cld.enabled takes one value (True)"}
    ]
    page = (out / "report.md").read_text()
    assert (
        "| rankme (decides on/off) | 4/4 | 0.00 |" in page and "| retrieval | 1/4 | 1.00 |" in page
    )
    # the label-free on/off choice (by RankMe, --pair-score): CLD on for easy, off for hard
    assert (easy["label_free_choice"], hard["label_free_choice"]) == (
        "cld.enabled=True",
        "cld.enabled=False",
    )
    # a key no run has: a clear error naming it, exit 2
    assert main([*args, "--pair", "cld.enabeld"]) == 2
    assert "--pair cld.enabeld: no finished run has this key" in capsys.readouterr().err


def test_wandb_offline_report_has_paired_table_and_per_group_keys(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        for cld in (False, True):
            metrics = {"knn/top1": 70.0 + cld + seed, "selection/rankme": 5.0 + cld}
            _pair_run(root, f"s{seed}_{int(cld)}", "easy", cld, seed, metrics)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "report"
    written: list[str] = []
    real_write = cli.write_atomic
    monkeypatch.setattr(
        cli, "write_atomic", lambda p, t: (written.append(p.name), real_write(p, t))
    )
    args = [str(root), "--out", str(out), "--wandb", "offline", "--pair", "cld.enabled"]
    assert main([*args, "--select-within", "data.dataset", "--score", "rankme"]) == 0
    # each file written once, after W&B (its mode is in the JSON), no temporary file left
    assert sorted(written) == ["report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["wandb_mode"] == "offline"
    assert not list(out.glob(".report*"))
    blob = next(out.glob("wandb/offline-run-*/*.wandb")).read_bytes()
    assert b"report/paired" in blob
    assert b"report/data.dataset=easy/label_free_pick" in blob
    assert b"report/data.dataset=easy/best_config" in blob
    assert b"report/label_free_pick" not in blob  # no choice across data sets
    capsys.readouterr()


def test_pair_without_labels_still_gives_the_label_free_choice(tmp_path: Path, capsys) -> None:
    """A user's runs on unlabelled data: no kNN, only the label-free scores."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        for cld in (False, True):
            metrics = {
                "selection/rankme": 5.0 + 2.0 * cld - seed,
                "selection/retrieval_top1": 9 + cld,
            }
            _pair_run(root, f"s{seed}_{int(cld)}", "mine", cld, seed, metrics)
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out), "--wandb", "off", "--pair", "cld.enabled"]) == 0
    (entry,) = json.loads((out / "report.json").read_text())["paired"]["settings"]
    assert entry["label_free_choice"] == "cld.enabled=True"  # by retrieval, the default
    assert entry["scores"]["retrieval"]["delta"]["mean"] == pytest.approx(1.0)
    assert entry["scores"]["rankme"]["delta"]["mean"] == pytest.approx(2.0)
    assert entry["interval"] is None  # no target, no interval
    assert entry["delta"]["n"] == 0 and entry["scores"]["rankme"]["pairs"] == 0
    capsys.readouterr()


def test_pair_by_weight_compares_each_cld_setting_with_lambda_zero(tmp_path: Path, capsys) -> None:
    """A λ sweep at two learning rates: each λ > 0 configuration against λ = 0 at the same lr and
    seed. kNN: lr 0.1: λ0 70, λ0.5/k10 72, λ1/k10 66; lr 0.2: λ0 60, λ0.5/k10 59, λ1/k10 65."""
    root = tmp_path / "runs"
    knn = {("0.1", 0.0): 70.0, ("0.1", 0.5): 72.0, ("0.1", 1.0): 66.0,
           ("0.2", 0.0): 60.0, ("0.2", 0.5): 59.0, ("0.2", 1.0): 65.0}  # fmt: skip
    for i, ((lr, lam), acc) in enumerate(knn.items()):
        cld = [f"cld.weight={lam}"] + (["cld.num_clusters=10"] if lam else [])
        metrics = {"knn/top1": acc, "selection/rankme": 1.0 + lam}  # RankMe: always more λ
        run = write_run(root, f"r{i}", [f"method.lr={lr}", *cld, "seed=0"], metrics)
        config = {"method": {"lr": float(lr)}, "cld": {"weight": lam}}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "report"
    args = [str(root), "--out", str(out), "--wandb", "off", "--pair", "cld.weight"]
    assert main([*args, "--label", "method.lr"]) == 0
    paired = json.loads((out / "report.json").read_text())["paired"]
    got = {(e["setting"], e["other"]): e["delta"]["mean"] for e in paired["settings"]}
    assert got == {
        ("method.lr=0.1", "cld.weight=0.5 cld.num_clusters=10"): 2.0,
        ("method.lr=0.1", "cld.weight=1.0 cld.num_clusters=10"): -4.0,
        ("method.lr=0.2", "cld.weight=0.5 cld.num_clusters=10"): -1.0,
        ("method.lr=0.2", "cld.weight=1.0 cld.num_clusters=10"): 5.0,
    }
    assert all(e["base"] == "cld.weight=0.0" for e in paired["settings"])
    # RankMe always says "CLD on": right in 2 of 4 pairs; regrets 0, 4, 1, 0
    assert paired["overall"]["rankme"] == {"agree": 2, "pairs": 4, "mean_regret": 1.25}
    capsys.readouterr()


def _seeded_pair(root: Path, data: str, gains: list[float]) -> None:
    """CLD off at 70 + seed, on at 70 + seed + gain, one seed per gain."""
    for seed, gain in enumerate(gains):
        for cld in (False, True):
            knn = 70.0 + seed + gain * cld
            metrics = {"knn/top1": knn, "selection/retrieval_top1": 50.0 + cld}
            _pair_run(root, f"{data}{seed}_{int(cld)}", data, cld, seed, metrics)


def test_pair_interval_marks_changes_within_noise(tmp_path: Path, capsys) -> None:
    """Seed-paired kNN gains 1, 2, 3: mean 2, std 1, 95 % interval 2 ± 4.303/sqrt(3) =
    [-0.48, +4.48], within noise; gains 2, 3, 4: [+0.52, +5.48], not; one seed: no interval."""
    root = tmp_path / "runs"
    _seeded_pair(root, "a", [1.0, 2.0, 3.0])
    _seeded_pair(root, "b", [2.0, 3.0, 4.0])
    _seeded_pair(root, "c", [5.0])
    out = tmp_path / "report"
    args = [str(root), "--out", str(out), "--wandb", "off", "--label", "data.dataset"]
    assert main([*args, "--pair", "cld.enabled"]) == 0
    a, b, c = json.loads((out / "report.json").read_text())["paired"]["settings"]
    half = 4.302653 / math.sqrt(3)
    assert a["interval"]["low"] == pytest.approx(2 - half)
    assert a["interval"]["high"] == pytest.approx(2 + half)
    assert (a["interval"]["dof"], a["interval"]["level"]) == (2, 0.95)
    assert b["interval"]["low"] == pytest.approx(3 - half) and c["interval"] is None
    page = (out / "report.md").read_text()
    assert "| +2.00 ± 1.00 | [-0.48, +4.48] within noise |" in page
    assert "| +3.00 ± 1.00 | [+0.52, +5.48] |" in page
    assert "| +5.00 | – (1 seed) |" in page
    assert "1 of 2 comparisons with an interval are within noise; 1 rest on one seed" in page
    # --interval asks for an interval everywhere: refused with one line naming the option
    capsys.readouterr()
    assert main([*args, "--pair", "cld.enabled", "--interval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cld-report: --interval: data.dataset=c")
    assert "rests on 1 seed pair with knn/top1" in err[0] and "1 of 3 comparisons" in err[0]
    assert main([*args, "--interval"]) == 2  # nothing paired: nothing to give an interval to
    assert capsys.readouterr().err.strip() == (
        "cld-report: --interval: needs --pair KEY (the interval is of a paired change)"
    )
    shutil.rmtree(root / "c0_0"), shutil.rmtree(root / "c0_1")
    assert main([*args, "--pair", "cld.enabled", "--interval"]) == 0  # every pair has seeds
    capsys.readouterr()


def test_selection_kendall_random_pick_and_seed_counts(tmp_path: Path, capsys) -> None:
    """kNN means 70, 71, 72, 73 (1, 2, 1, 3 seeds). Retrieval ranks them 1 3 2 4: Spearman 0.8,
    Kendall 4/6, picks the best (regret 0). RankMe ranks them backwards: picks 70, regret 3,
    worse than a random pick's 73 - 71.5 = 1.5."""
    root = tmp_path / "runs"
    configs = {
        0: ([70.0], 1.0),
        1: ([70.0, 72.0], 3.0),
        2: ([72.0], 2.0),
        3: ([72.0, 73.0, 74.0], 4.0),
    }
    for c, (accs, retrieval) in configs.items():
        for seed, acc in enumerate(accs):
            metrics = {"knn/top1": acc, "selection/retrieval_top1": retrieval,
                       "selection/rankme": 10.0 - c}  # fmt: skip
            write_run(root, f"c{c}s{seed}", [f"method.lr={c}", f"seed={seed}"], metrics)
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out), "--wandb", "off"]) == 0
    sel = json.loads((out / "report.json").read_text())["selection"]
    assert sel["random_regret"] == pytest.approx(1.5)
    r, k = sel["scores"]["retrieval"], sel["scores"]["rankme"]
    assert (r["spearman"], r["kendall"], r["regret"]) == pytest.approx((0.8, 2 / 3, 0.0))
    assert (r["n"], r["seeds_min"], r["seeds_max"]) == (4, 1, 3)
    assert (k["kendall"], k["regret"], k["random_regret"]) == pytest.approx((-1.0, 3.0, 1.5))
    page = (out / "report.md").read_text()
    assert (
        "| retrieval (default) | 4 | 1–3 | 0.80 | 0.67 | method.lr=3 | 73.00 | 0.00 | 1.50 |"
        in (page)
    )
    assert "A random pick among the 4 configurations has an expected regret of 1.50" in page
    capsys.readouterr()


def test_config_is_read_once_per_run(sweep: Path, monkeypatch) -> None:
    run = find_runs(sweep)[0]
    (run.path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"cld": {"weight": 0.5}}))
    loads: list[object] = []
    real_load = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda s: (loads.append(s), real_load(s))[1])
    assert [run.config_value("cld.weight") for _ in range(3)] == [0.5, 0.5, 0.5]
    assert run.config_value("cld.nope") is None and run.config_value("cld.weight.x") is None
    assert len(loads) == 1


def test_one_default_score_for_score_and_pair_score(capsys) -> None:
    from cld_lightning.report import DEFAULT_SCORE

    assert DEFAULT_SCORE == "retrieval"  # cld-train's selection.score default
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count(f"(default {DEFAULT_SCORE}") == 2  # --score and --pair-score


def test_cld_report_without_matplotlib(sweep: Path, tmp_path: Path) -> None:
    """A plain install (no ``[plots]`` extra): matplotlib made unimportable, cld-report still
    writes report.md and report.json, skips curves.png and says how to get it."""
    out = tmp_path / "rep"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from cld_lightning.report.cli import main\n"
        f"raise SystemExit(main([{str(sweep)!r}, '--out', {str(out)!r}, '--wandb', 'off']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'pip install "cld-lightning[plots]"' in proc.stdout
    assert (out / "report.md").is_file() and not (out / "curves.png").exists()
    assert json.loads((out / "report.json").read_text())["curves_png"] is None


def test_unknown_target_and_label_keys_are_refused(sweep: Path, capsys) -> None:
    assert main([str(sweep), "--target", "knn/nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--target knn/nosuch: no finished run has this metric; have: knn/" in err
    assert "knn/top1" in err
    for run in find_runs(sweep):
        (run.path / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump({"cld": {"weight": 1.0}, "data": {"imbalance_ratio": None}})
        )
    assert main([str(sweep), "--label", "no.such.key", "--out", str(sweep / "r")]) == 2
    assert "--label no.such.key: no run's config (.hydra/config.yaml) has this key" in (
        capsys.readouterr().err
    )
    assert main([str(sweep), "--pair", "cld.wieght", "--out", str(sweep / "r")]) == 2
    assert "--pair cld.wieght" in capsys.readouterr().err
    # a key present with a null value is a key
    assert main([str(sweep), "--label", "data.imbalance_ratio", "--wandb", "off"]) == 0
