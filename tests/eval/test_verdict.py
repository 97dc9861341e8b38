"""The end-of-run verdict: learned figure vs raw pixels and the untrained network, with numbers."""

from __future__ import annotations

import json
import math

import pytest

from cld_lightning.eval.verdict import FEW_STEPS, advice_for, run_context, verdict

KNN_GOOD = {
    "knn/top1": 83.98,
    "knn/pixel_top1": 81.78,
    "knn/random_init_top1": 62.57,
    "knn/random_init_backbone_top1": 71.19,
}


def test_above_both_baselines_no_advice():
    v = verdict(KNN_GOOD, {"method": "npid", "steps": 10})
    assert v.below_pixels is False and v.below_untrained is False and not v.below
    assert v.untrained == 71.19  # max of the untrained head and backbone feature
    assert v.flags() == {"verdict/below_pixels": 0.0, "verdict/below_untrained": 0.0}
    assert v.advice == ()
    assert "beats the untrained network (71.19 %, +12.79 pts) and raw pixels" in v.summary


def test_below_untrained_backbone_feature_counts():
    # above the untrained head (62.57) but below its backbone feature (71.19): below untrained
    m = {**KNN_GOOD, "knn/top1": 70.0}
    ctx = {"method": "npid", "steps": 468, "epochs": 1, "max_epochs": 1, "batch_size": 128}
    v = verdict(m, ctx)
    assert v.below_untrained is True and v.below_pixels is True
    assert v.flags() == {"verdict/below_pixels": 1.0, "verdict/below_untrained": 1.0}
    assert v.summary.startswith("VERDICT: the learned weighted kNN (70.00 %) is AT OR BELOW")
    assert "better than either baseline" in v.summary
    assert any("only 468 optimiser steps in 1 epoch" in a for a in v.advice)
    assert any(
        a.endswith("raise trainer.max_epochs=1 or lower data.batch_size=128") for a in v.advice
    )
    assert any(a.startswith("MoCo instead of NPID") for a in v.advice)


def test_at_is_below():
    m = {**KNN_GOOD, "knn/top1": 81.78}
    v = verdict(m)
    assert v.below_pixels is True and v.below_untrained is False
    assert "better than raw pixels" in v.summary and "it does beat the untrained" in v.summary


def test_below_pixels_only():
    m = {**KNN_GOOD, "knn/top1": 80.0}
    v = verdict(m, {"method": "moco", "steps": 6552, "cld": True})
    assert (v.below_pixels, v.below_untrained) == (True, False)
    assert v.flags()["verdict/below_pixels"] == 1.0
    # MoCo: no "switch to MoCo"; many steps: "more epochs" stating the count, not "more steps"
    assert not any("MoCo instead" in a for a in v.advice)
    assert v.advice[0].startswith("more epochs: this run took 6,552 optimiser steps")
    # a step-limited run (max_epochs=-1): the advice names trainer.max_steps, not max_epochs
    ctx = run_context({"trainer": {"max_epochs": -1, "max_steps": 6552}}, 5148, 10)
    assert ctx == {"max_steps": 6552, "steps": 5148, "epochs": 10}
    assert advice_for(ctx)[0] == (
        "more epochs: this run took 5,148 optimiser steps in 10 epochs: raise trainer.max_steps=6552"
    )


def test_advice_follows_the_config():
    few = advice_for({"steps": FEW_STEPS - 1})
    assert few[0].startswith(
        f"more optimiser steps: this run took only {FEW_STEPS - 1:,} optimiser"
    )
    npid = advice_for({"method": "cld_lightning.methods.NPID", "cld": False})
    assert any("MoCo instead of NPID" in a for a in npid) and any("cld=on" in a for a in npid)
    hot = advice_for({"temperature": 0.2, "crop_min_scale": 0.2})
    assert any("method.temperature=0.2 -> 0.1" in a for a in hot)
    assert any("data.crop_min_scale=0.2 -> 0.5-0.7" in a for a in hot)
    tuned = advice_for({"method": "moco", "temperature": 0.1, "crop_min_scale": 0.7, "cld": True})
    assert len(tuned) == 1  # only "more steps / epochs" is left to suggest


def test_missing_and_nan_baselines():
    assert verdict({"knn/top1": 50.0}).available is False
    assert verdict({"knn/top1": 50.0}).flags() == {}
    assert verdict({}).available is False
    v = verdict({"knn/top1": 50.0, "knn/pixel_top1": math.nan, "knn/random_init_top1": 60.0})
    assert v.below_pixels is None and v.below_untrained is True
    assert v.flags() == {"verdict/below_untrained": 1.0}


def test_linear_protocol_uses_linear_baselines():
    m = {
        "linear/top1": 81.35,
        "linear/pixel_top1": 84.0,
        "linear/random_init_top1": 75.0,
        **KNN_GOOD,
    }
    v = verdict(m, protocol="linear")
    assert (v.below_pixels, v.below_untrained) == (True, False)
    assert "learned linear probe (81.35 %)" in v.summary
    assert v.flags("verdict/linear_") == {
        "verdict/linear_below_pixels": 1.0,
        "verdict/linear_below_untrained": 0.0,
    }
    with pytest.raises(ValueError, match="protocol"):
        verdict(m, protocol="svm")


def test_run_context_from_a_resolved_config_and_json_form():
    cfg = {
        "method": {"_target_": "cld_lightning.methods.NPID", "temperature": 0.1},
        "data": {"crop_min_scale": 0.2, "batch_size": 256},
        "cld": {"enabled": False},
        "trainer": {"max_epochs": 3},
    }
    ctx = run_context(cfg, global_step=700, epoch=3)
    assert ctx == {
        "method": "npid",
        "temperature": 0.1,
        "crop_min_scale": 0.2,
        "batch_size": 256,
        "cld": False,
        "max_epochs": 3,
        "steps": 700,
        "epochs": 3,
    }
    v = verdict({**KNN_GOOD, "knn/top1": 40.0}, ctx)
    d = json.loads(json.dumps(v.as_dict()))
    assert d["below_untrained"] is True and d["verdict"] == v.summary and len(d["advice"]) >= 3
    assert v.lines()[0].strip() == v.summary and "what usually helps:" in v.lines()[1]
