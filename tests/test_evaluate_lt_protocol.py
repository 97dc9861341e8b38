"""`cld-eval long_tail_protocol.enabled=true`: probes on the balanced training set, not on the
long-tailed pretraining set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cld_lightning.app.config_check import ConfigError
from cld_lightning.app.evaluate import build_eval_datamodule, evaluate, load_pretrained
from cld_lightning.eval import FAST_RECIPE, extract_features
from cld_lightning.eval.linear_probe import linear_probe_result
from tests.test_evaluate import compose_eval, trained_ckpt  # noqa: F401 (the module fixture)

QUIET = (
    "knn.enabled=false",
    "linear.enabled=false",
    "plots.enabled=false",
    "progress=false",
    "+data_overrides.num_workers=0",
    "+data_overrides.persistent_workers=false",
)


def test_protocol_probes_the_balanced_training_set(trained_ckpt: Path, tmp_path) -> None:  # noqa: F811
    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        *QUIET,
        "+data_overrides.imbalance_ratio=4",  # the pretraining set seen by cld-eval: long-tailed
        "long_tail_protocol.enabled=true",
        "long_tail_protocol.shots=[3,1]",
        "long_tail_protocol.num_splits=2",
        f"output_json={tmp_path / 'lt.json'}",
    )
    res = evaluate(cfg)
    train_cfg = torch.load(trained_ckpt, weights_only=False)["cld_lightning_config"]
    long_tailed = build_eval_datamodule(cfg, train_cfg)
    assert long_tailed.num_train_samples < 64
    assert res["lt_protocol/train_images"] == 64  # every image of the balanced training split
    for key in ("3shot_top1", "3shot_top1_std", "1shot_top1_split1", "full_many"):
        assert f"lt_protocol/{key}" in res, key
    assert res["lt_protocol/num_splits"] == 2
    # the full probe equals a direct fast-recipe probe on the balanced set's backbone features
    model, _, _ = load_pretrained(trained_ckpt)
    balanced = build_eval_datamodule(compose_eval(f"ckpt_path={trained_ckpt}", *QUIET), train_cfg)
    mem, test = balanced.val_dataloader()
    mf, my, _ = extract_features(model, mem, embed_fn=model.features)
    tf, ty, _ = extract_features(model, test, embed_fn=model.features)
    expected = linear_probe_result(mf, my, tf, ty, 10, FAST_RECIPE).top1
    assert res["lt_protocol/full_top1"] == pytest.approx(expected, abs=1e-4)


def test_protocol_bad_shots_named(trained_ckpt: Path, tmp_path) -> None:  # noqa: F811
    cfg = compose_eval(
        f"ckpt_path={trained_ckpt}",
        *QUIET,
        "long_tail_protocol.enabled=true",
        "long_tail_protocol.shots=[10,0]",
        f"output_json={tmp_path / 'bad.json'}",
    )
    with pytest.raises(ConfigError, match=r"long_tail_protocol\.shots"):
        evaluate(cfg)
