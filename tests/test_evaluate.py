"""`cld-eval` on a checkpoint written by `cld-train` (generated data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from cld_lightning.app.config_check import ConfigError
from cld_lightning.app.evaluate import evaluate, load_pretrained
from cld_lightning.app.train import train
from tests.conftest import CONF_DIR


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory, fake_data_root) -> Path:
    out = tmp_path_factory.mktemp("train")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=cifar10",
                f"paths.data_dir={fake_data_root}",
                f"paths.output_dir={out}",
                "backbone=cifar_resnet18_small",
                "backbone.width=4",
                "data.batch_size=16",
                "data.num_workers=0",
                "data.persistent_workers=false",
                "data.download=false",
                "trainer.max_epochs=1",
                "trainer.enable_progress_bar=false",
                "cld.num_clusters=4",
                "method.knn_k=5",
                "method.warmup_epochs=0",
                "trainer.precision=32-true",  # not `auto`: the figures must not depend on the CPU
            ],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    train(cfg)
    GlobalHydra.instance().clear()
    return out / "checkpoints" / "last.ckpt"


def compose_eval(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def test_load_pretrained_restores_weights(trained_ckpt: Path) -> None:
    model, train_cfg, meta = load_pretrained(trained_ckpt)
    state = torch.load(trained_ckpt, weights_only=False)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert meta["in_channels"] == 3 and train_cfg["data"]["dataset"] == "cifar10"


def test_cld_eval_writes_json_next_to_checkpoint(trained_ckpt: Path, fake_data_root) -> None:
    from cld_lightning.eval import weighted_knn

    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        "knn.k=5",
        "plots.method=pca",
        "semi_supervised.enabled=true",
        "semi_supervised.fractions=[0.1]",
        "semi_supervised.epochs=1",
        "progress=false",
        "+data_overrides.num_workers=0",
        "+data_overrides.persistent_workers=false",
    )
    res = evaluate(cfg)
    out = trained_ckpt.parent / "eval_cifar10.json"
    assert out.is_file() and json.loads(out.read_text())["knn/top1"] == res["knn/top1"]
    assert "semi/10pct_top1" in res
    assert res["semi/10pct_labels"] == 10  # 64 images, 10 classes -> 1 per class
    assert Path(res["plots/embedding"]).is_file()
    # kNN value equals a direct computation on the stored model
    model, _, _ = load_pretrained(trained_ckpt)
    from cld_lightning.app.evaluate import build_eval_datamodule
    from cld_lightning.eval import extract_features

    dm = build_eval_datamodule(
        cfg, torch.load(trained_ckpt, weights_only=False)["cld_lightning_config"]
    )
    mem, test = dm.val_dataloader()
    mz, my, _ = extract_features(model, mem)
    tz, ty, _ = extract_features(model, test)
    pred = weighted_knn(mz, my, tz, 10, k=5, temperature=0.1)
    assert abs(res["knn/top1"] - float((pred == ty).float().mean() * 100)) < 1e-4
    # the class-balanced protocol beside it (one report: knn_report)
    bal = weighted_knn(mz, my, tz, 10, k=5, temperature=0.1, balanced=True)
    assert res["knn/balanced_top1"] == pytest.approx(float((bal == ty).float().mean() * 100))
    # linear probe: the fast recipe on frozen *backbone* features, memory set -> test set
    from cld_lightning.eval import FAST_RECIPE, linear_probe

    mf, mfy, _ = extract_features(model, mem, embed_fn=model.features)
    tf, tfy, _ = extract_features(model, test, embed_fn=model.features)
    expected_linear = linear_probe(mf, mfy, tf, tfy, 10, FAST_RECIPE)
    assert res["linear/top1"] == pytest.approx(expected_linear, abs=1e-4)
    # baselines, same protocol: raw pixels computed directly, and cld-train's end-of-run figures
    # (same seed, memory and test sets) reproduced exactly by cld-eval
    mx = torch.cat([x.flatten(1) for x, _, _ in mem])
    tx = torch.cat([x.flatten(1) for x, _, _ in test])
    pix = weighted_knn(F.normalize(mx, dim=1), my, F.normalize(tx, dim=1), 10, k=5, temperature=0.1)
    assert res["knn/pixel_top1"] == float((pix == ty).float().mean() * 100)
    trained = json.loads((trained_ckpt.parents[1] / "metrics.json").read_text())
    for key in ("knn/pixel_top1", "knn/random_init_top1", "knn/random_init_backbone_top1"):
        assert res[key] == pytest.approx(trained[key], abs=1e-4), key
        balanced = key.replace("_top1", "_balanced_top1")
        assert res[balanced] == pytest.approx(trained[balanced], abs=1e-4), balanced
    # cld-train's final metrics hold the online report's class-balanced figures too
    assert trained["knn/balanced_top1"] == pytest.approx(res["knn/balanced_top1"], abs=1e-4)
    assert "knn/balanced_mean_class_top1" in trained
    assert (
        res["knn/random_init_top1"] != res["knn/top1"]
        or res["knn/backbone_top1"] != (res["knn/random_init_backbone_top1"])
    )


def test_transfer_to_other_dataset(trained_ckpt: Path, fake_data_root, tmp_path) -> None:
    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        "data=cifar100",
        f"paths.data_dir={fake_data_root}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.download=false",
        "knn.k=5",
        "linear.enabled=false",
        "plots.enabled=false",
        "progress=false",
        f"output_json={tmp_path / 'transfer.json'}",
    )
    res = evaluate(cfg)
    assert res["transfer"] is True and res["num_classes"] == 100
    assert (tmp_path / "transfer.json").is_file()


def test_missing_checkpoint_is_named(tmp_path) -> None:
    cfg = compose_eval(f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(ConfigError, match="nope.ckpt"):
        evaluate(cfg)


def test_cld_eval_linear_balanced_baselines_and_verdict(trained_ckpt: Path, tmp_path) -> None:
    """Linear probe figures reproduced directly: the logit-adjusted (balanced) probe, many/medium/
    few-shot keys (long_tail=true), the two baselines under the same recipe (standardised raw
    pixels; the untrained copy of the kNN baseline's seed scheme) and the verdict against them."""
    from cld_lightning.app.evaluate import build_eval_datamodule
    from cld_lightning.eval import FAST_RECIPE, extract_features
    from cld_lightning.eval.baselines import reinitialized_copy
    from cld_lightning.eval.linear_probe import linear_probe_result, standardize_features
    from cld_lightning.eval.verdict import verdict

    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        "knn.enabled=false",
        "plots.enabled=false",
        "long_tail=true",
        "progress=false",
        "+data_overrides.num_workers=0",
        "+data_overrides.persistent_workers=false",
        f"output_json={tmp_path / 'lin.json'}",
    )
    res = evaluate(cfg)
    saved = json.loads((tmp_path / "lin.json").read_text())
    model, train_cfg, _ = load_pretrained(trained_ckpt)
    mem, test = build_eval_datamodule(cfg, train_cfg).val_dataloader()
    mf, my, _ = extract_features(model, mem, embed_fn=model.features)
    tf, ty, _ = extract_features(model, test, embed_fn=model.features)
    learned = linear_probe_result(mf, my, tf, ty, 10, FAST_RECIPE, tau=1.0)
    assert res["linear/top1"] == pytest.approx(learned.top1, abs=1e-4)
    assert res["linear/balanced_top1"] == pytest.approx(learned.balanced_top1, abs=1e-4)
    assert res["linear/tau"] == 1.0
    from cld_lightning.longtail import shot_groups

    groups = shot_groups(learned.train_class_counts)  # a group with no class is left out
    filled = {g for g in ("many", "medium", "few") if len(groups[g])}
    assert filled and {k for k in saved if k.startswith("linear/balanced_")} - {
        "linear/balanced_top1"
    } == {f"linear/balanced_{g}" for g in filled}
    for g in ("many", "medium", "few"):
        assert (f"linear/{g}" in saved) == (g in filled), g
    # raw pixels: flattened test-transformed images, standardised with the memory set's statistics
    mx = torch.cat([x.flatten(1) for x, _, _ in mem])
    tx = torch.cat([x.flatten(1) for x, _, _ in test])
    smx, stx = standardize_features(mx, tx)
    pix = linear_probe_result(smx, my, stx, ty, 10, FAST_RECIPE, tau=1.0)
    assert res["linear/pixel_top1"] == pytest.approx(pix.top1, abs=1e-4)
    assert res["linear/pixel_balanced_top1"] == pytest.approx(pix.balanced_top1, abs=1e-4)
    # the untrained network: the same seed as cld-train's kNN baseline
    fresh = reinitialized_copy(model, int(train_cfg["seed"]))
    rf, _, _ = extract_features(fresh, mem, embed_fn=fresh.features)
    rt, _, _ = extract_features(fresh, test, embed_fn=fresh.features)
    rand = linear_probe_result(rf, my, rt, ty, 10, FAST_RECIPE)
    assert res["linear/random_init_top1"] == pytest.approx(rand.top1, abs=1e-4)
    # the verdict against the linear baselines (flags 0/1, text and advice in the JSON)
    v = verdict(res, protocol="linear")
    assert saved["verdict/linear_below_pixels"] == float(v.below_pixels)
    assert saved["verdict/linear_below_untrained"] == float(v.below_untrained)
    assert saved["verdict/linear"] == v.summary
    if v.below:  # one epoch on 64 images: the advice names this run's step count
        steps = torch.load(trained_ckpt, weights_only=False)["global_step"]
        assert f"only {steps:,} optimiser steps" in saved["verdict/linear_advice"][0]


def test_cld_eval_rejects_a_negative_tau(trained_ckpt: Path) -> None:
    cfg = compose_eval(f"ckpt_path={trained_ckpt}", "knn.enabled=false", "linear.tau=-1")
    with pytest.raises(ConfigError, match="linear.tau"):
        evaluate(cfg)


def test_cld_eval_linear_standardize_option(trained_ckpt: Path, tmp_path) -> None:
    """linear.standardize=true z-scores the learned and the untrained features like the pixels."""
    from cld_lightning.app.evaluate import build_eval_datamodule
    from cld_lightning.eval import FAST_RECIPE, extract_features
    from cld_lightning.eval.baselines import reinitialized_copy
    from cld_lightning.eval.linear_probe import linear_probe_result, standardize_features

    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        "knn.enabled=false",
        "plots.enabled=false",
        "linear.standardize=true",
        "progress=false",
        "+data_overrides.num_workers=0",
        "+data_overrides.persistent_workers=false",
        f"output_json={tmp_path / 'std.json'}",
    )
    res = evaluate(cfg)
    model, train_cfg, _ = load_pretrained(trained_ckpt)
    mem, test = build_eval_datamodule(cfg, train_cfg).val_dataloader()
    fresh = reinitialized_copy(model, int(train_cfg["seed"]))
    for net, key in ((model, "linear/top1"), (fresh, "linear/random_init_top1")):
        mf, my, _ = extract_features(net, mem, embed_fn=net.features)
        tf, ty, _ = extract_features(net, test, embed_fn=net.features)
        smf, stf = standardize_features(mf, tf)
        expected = linear_probe_result(smf, my, stf, ty, 10, FAST_RECIPE).top1
        assert res[key] == pytest.approx(expected, abs=1e-4), key


# ------------------------------------------------------------------ cld-eval keeps its work
def test_unwritable_output_is_refused_before_any_work(
    trained_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cld_lightning.app.evaluate as evaluate_module

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(evaluate_module, "_read_pretrained", no_work)  # what evaluate() calls
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for override in (f"output_dir={blocker / 'out'}", f"output_json={blocker / 'r.json'}"):
        with pytest.raises(ConfigError) as info:
            evaluate(compose_eval(f"ckpt_path={trained_ckpt}", override))
        text = str(info.value)
        assert "\n" not in text and str(blocker) in text and "output_dir=" in text, text


def test_output_dir_gets_the_results_written_atomically(trained_ckpt: Path, tmp_path) -> None:
    out = tmp_path / "results"
    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        f"output_dir={out}",
        "knn.k=5",
        "knn.baselines=false",
        "linear.enabled=false",
        "plots.enabled=false",
        "progress=false",
        "+data_overrides.num_workers=0",
        "+data_overrides.persistent_workers=false",
    )
    res = evaluate(cfg)
    assert res["output_json"] == str(out / "eval_cifar10.json")
    assert json.loads((out / "eval_cifar10.json").read_text())["knn/top1"] == res["knn/top1"]
    assert sorted(p.name for p in out.iterdir()) == ["eval_cifar10.json"]  # no temp file left


def test_truncated_and_mismatched_checkpoints_are_one_line(trained_ckpt: Path, tmp_path) -> None:
    from cld_lightning.modules.checkpoint_io import load_checkpoint

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(trained_ckpt.read_bytes()[:5000])
    with pytest.raises(ConfigError) as info:
        load_pretrained(broken)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"ckpt_path: cannot read the checkpoint '{broken}'")
    # weights of another width than the stored config builds: one line, not a size-mismatch list
    ckpt = load_checkpoint(trained_ckpt)
    ckpt["cld_lightning_config"]["backbone"]["width"] = 8
    wider = tmp_path / "wider.ckpt"
    torch.save(ckpt, wider)
    with pytest.raises(ConfigError) as info:
        load_pretrained(wider)
    text = str(info.value)
    assert "\n" not in text and str(wider) in text and "differ in shape" in text, text


def test_cli_truncated_checkpoint_is_one_line(trained_ckpt: Path, tmp_path) -> None:
    import subprocess
    import sys

    from tests.distributed.helpers import script_env

    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(trained_ckpt.read_bytes()[:5000])
    proc = subprocess.run(
        [sys.executable, "-m", "cld_lightning.app.evaluate", f"ckpt_path={broken}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=script_env(),
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cld-eval: ")]
    assert len(lines) == 1 and str(broken) in lines[0] and "truncated or corrupt" in lines[0]
