"""The momentum-method contract: one base (``MomentumMethod``) and one naming scheme for MoCo,
InfoMin and BYOL (``momentum_encoder``, ``ema_momentum``, ``ema_cosine``,
``current_ema_momentum``, ``momentum_pairs``); checkpoints and configs of the earlier names
(``key_encoder``, BYOL's ``target`` / ``target_momentum`` / ``target_cosine``) still load;
``num_samples`` reaches NPID only; the ``build_instance_head`` hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cld_lightning.app.build import build_model
from cld_lightning.app.config_check import ConfigError, check_target_keys, check_train_config
from cld_lightning.methods import BYOL, NPID, InfoMin, MoCo, MomentumMethod, PendingUpdate
from tests.helpers import MLPBackbone, TinyDataModule, quiet_trainer

KW = {"warmup_epochs": 0, "num_classes": 4, "knn_k": 5}
CLD = {"num_clusters": 4, "out_dim": 8}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(cls: type, **kw: Any) -> Any:
    torch.manual_seed(0)
    if cls is BYOL:
        return BYOL(
            MLPBackbone(),
            CLD,
            embed_dim=8,
            projector_hidden_dim=16,
            predictor_hidden_dim=16,
            **KW,
            **kw,
        )
    extra = {"jigsaw_weight": 0.0} if cls is InfoMin and "jigsaw_weight" not in kw else {}
    return cls(
        MLPBackbone(),
        CLD,
        embed_dim=8,
        queue_size=16,
        gather_distributed=False,
        **KW,
        **extra,
        **kw,
    )


def _perturb(module: nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


# old -> new state-dict prefixes of the earlier names
OLD_PREFIXES = {
    MoCo: {"momentum_encoder.": "key_encoder."},
    InfoMin: {"momentum_encoder.": "key_encoder."},
    BYOL: {
        "momentum_encoder.backbone.": "target.backbone.",
        "momentum_encoder.head.": "target.projector.",
    },
}


def _old_names(state: dict[str, torch.Tensor], cls: type) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for new, old in OLD_PREFIXES[cls].items():
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = value
    return out


@pytest.mark.parametrize("cls", [MoCo, InfoMin, BYOL])
def test_one_base_one_naming_scheme(cls: type) -> None:
    model = _build(cls)
    assert isinstance(model, MomentumMethod)
    assert set(model.momentum_encoder) == {"backbone", "head"}
    for old in ("key_encoder", "target", "target_momentum", "current_target_momentum"):
        assert not hasattr(model, old), old
    pairs = model.momentum_pairs()
    assert [(online, copy) for online, copy in pairs] == [
        (model.backbone, model.momentum_encoder["backbone"]),
        (model.instance_head, model.momentum_encoder["head"]),
    ]
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    default = {MoCo: (0.999, False), InfoMin: (0.999, False), BYOL: (0.99, True)}[cls]
    assert (model.ema_momentum, model.ema_cosine) == default
    assert model.current_ema_momentum() == default[0]  # outside a Trainer: constant


@pytest.mark.parametrize("cls", [MoCo, BYOL])
def test_momentum_update_is_the_ema_of_every_pair(cls: type) -> None:
    model = _build(cls, ema_momentum=0.75, ema_cosine=False)
    _perturb(model.backbone)
    _perturb(model.instance_head)
    before = [[p.clone() for p in copy.parameters()] for _, copy in model.momentum_pairs()]
    pending = PendingUpdate(keys=torch.zeros(2, 8)) if cls is MoCo else PendingUpdate()
    model.update_state(pending)
    for (online, copy), old in zip(model.momentum_pairs(), before, strict=True):
        for p_online, p_copy, p_old in zip(
            online.parameters(), copy.parameters(), old, strict=True
        ):
            assert torch.equal(p_copy, p_old.mul(0.75).add(p_online, alpha=0.25))
    assert int(model.ema_steps) == 1


@pytest.mark.parametrize("cls", [MoCo, InfoMin, BYOL])
def test_checkpoint_dict_with_old_key_names_loads_the_same_weights(cls: type) -> None:
    trained = _build(cls)
    _perturb(trained)  # every tensor differs from a fresh model's
    old = _old_names(trained.state_dict(), cls)
    assert not any(k.startswith("momentum_encoder.") for k in old)
    assert any(k.startswith(tuple(OLD_PREFIXES[cls].values())) for k in old)
    fresh = _build(cls)
    checkpoint = {"state_dict": dict(old)}
    fresh.on_load_checkpoint(checkpoint)  # what Lightning calls before load_state_dict
    assert set(checkpoint["state_dict"]) == set(trained.state_dict())
    fresh.load_state_dict(checkpoint["state_dict"])  # strict
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # a plain load_state_dict of the old names (cld-eval) works too
    plain = _build(cls)
    plain.load_state_dict(dict(old))
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in trained.state_dict().items())


def _old_checkpoint(cls: type, tmp_path: Path) -> tuple[Path, Any]:
    """A Lightning checkpoint as the earlier version wrote it: old state-dict names, old
    hyper-parameter names (BYOL) and ``num_samples`` in the hyper-parameters."""
    model = _build(cls, ema_momentum=0.97, ema_cosine=False)
    trainer = quiet_trainer(max_steps=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=TinyDataModule())
    path = tmp_path / "new.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"] = _old_names(ckpt["state_dict"], cls)
    hparams = dict(ckpt["hyper_parameters"])
    hparams["num_samples"] = 40
    if cls is BYOL:
        hparams["target_momentum"] = hparams.pop("ema_momentum")
        hparams["target_cosine"] = hparams.pop("ema_cosine")
    ckpt["hyper_parameters"] = hparams
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    return old, model


@pytest.mark.parametrize("cls", [MoCo, BYOL])
def test_old_checkpoint_file_loads_and_resumes(cls: type, tmp_path: Path) -> None:
    path, trained = _old_checkpoint(cls, tmp_path)
    loaded = cls.load_from_checkpoint(path, backbone=MLPBackbone())
    assert (loaded.ema_momentum, loaded.ema_cosine) == (0.97, False)  # old names carried over
    assert "num_samples" not in loaded.hparams
    state = loaded.state_dict()
    assert state.keys() == trained.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items())
    # Trainer resume from the old file (Lightning calls on_load_checkpoint, then loads)
    resumed = _build(cls, ema_momentum=0.97, ema_cosine=False)
    trainer = quiet_trainer(max_steps=1, default_root_dir=tmp_path)
    trainer.fit(resumed, datamodule=TinyDataModule(), ckpt_path=str(path))
    assert trainer.global_step == 1
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in trained.state_dict().items())


def test_old_config_key_is_refused_naming_the_new_one(compose_train) -> None:
    node = OmegaConf.create({"_target_": "cld_lightning.methods.BYOL", "target_momentum": 0.99})
    with pytest.raises(ConfigError, match=r"method\.target_momentum is now method\.ema_momentum"):
        check_target_keys(node, "method")
    cfg = compose_train("method=byol", "+method.target_cosine=false")
    with pytest.raises(ConfigError, match=r"method\.target_cosine is now method\.ema_cosine"):
        check_train_config(cfg)
    check_train_config(compose_train("method=byol", "method.ema_cosine=false"))


def test_stored_config_with_old_names_builds_and_num_samples_reaches_npid_only() -> None:
    """cld-eval rebuilds a module from the config stored in a checkpoint: an old BYOL config
    (target_momentum) builds with the value under the new name."""
    meta = {"in_channels": 3, "num_train_samples": 40, "num_classes": 4, "image_size": 8}
    backbone = {"_target_": "cld_lightning.models.build_backbone", "name": "small_cnn", "width": 4}
    old_byol = {
        "_target_": "cld_lightning.methods.BYOL",
        "embed_dim": 8,
        "projector_hidden_dim": 16,
        "predictor_hidden_dim": 16,
        "target_momentum": 0.97,
        "target_cosine": False,
        "num_classes": 10,
    }
    byol = build_model(old_byol, backbone, None, meta)
    assert (byol.ema_momentum, byol.ema_cosine, byol.num_classes) == (0.97, False, 4)
    assert "num_samples" not in byol.hparams and not byol.cld_enabled
    moco = build_model(
        {"_target_": "cld_lightning.methods.MoCo", "queue_size": 16}, backbone, None, meta
    )
    assert "num_samples" not in moco.hparams
    npid = build_model({"_target_": "cld_lightning.methods.NPID"}, backbone, None, meta)
    assert isinstance(npid, NPID) and npid.memory.bank.shape[0] == 40
    with pytest.raises(TypeError):
        MoCo(MLPBackbone(), num_samples=40)  # not an argument of the momentum methods


def test_build_instance_head_hook_is_the_one_place_heads_are_built() -> None:
    calls: list[tuple[str, int | None]] = []

    class TanhHeadMoCo(MoCo):
        def build_instance_head(self, kind: str, hidden_dim: int | None) -> nn.Module:
            calls.append((kind, hidden_dim))
            return nn.Sequential(
                nn.Linear(self.feature_dim, 32), nn.Tanh(), nn.Linear(32, self.embed_dim)
            )

    torch.manual_seed(0)
    model = TanhHeadMoCo(
        MLPBackbone(), None, embed_dim=8, queue_size=16, instance_head="mlp", head_hidden_dim=7
    )
    assert calls == [("mlp", 7)]
    assert isinstance(model.instance_head[1], nn.Tanh)
    assert isinstance(model.momentum_encoder["head"][1], nn.Tanh)  # the EMA copies the hook's head
    for a, b in zip(
        model.instance_head.parameters(), model.momentum_encoder["head"].parameters(), strict=True
    ):
        assert torch.equal(a, b)
    # BYOL's projector comes from its hook: built once, no head of the base's kind left over
    byol = _build(BYOL)
    assert [type(m) for m in byol.instance_head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    n_params = sum(p.numel() for p in byol.parameters() if p.requires_grad)
    projector = (16 * 16 + 16) + 2 * 16 + (16 * 8 + 8)
    predictor = (8 * 16 + 16) + 2 * 16 + (16 * 8 + 8)
    backbone = sum(p.numel() for p in MLPBackbone().parameters())
    group_head = 16 * 8 + 8
    assert n_params == backbone + projector + predictor + group_head
    # InfoMin's jigsaw head takes the instance head's kind from the base, not from kwargs
    info = _build(InfoMin, jigsaw_weight=0.5, instance_head="normmlp")
    assert info.instance_head_kind == "normmlp"
    assert isinstance(info.jigsaw_head.patch_head, nn.Sequential)


def test_pending_update_merges_field_by_field() -> None:
    a = PendingUpdate(index=torch.tensor([0, 1]), embeddings=(torch.ones(2, 3), torch.zeros(2, 3)))
    b = PendingUpdate(index=torch.tensor([5]), embeddings=(2 * torch.ones(1, 3), torch.ones(1, 3)))
    merged = PendingUpdate.merge([a, b])
    assert merged.index.tolist() == [0, 1, 5] and merged.keys is None
    assert merged.embeddings[0].tolist() == [[1.0] * 3, [1.0] * 3, [2.0] * 3]
    assert merged.embeddings[1].tolist() == [[0.0] * 3, [0.0] * 3, [1.0] * 3]
    keys = PendingUpdate.merge(
        [PendingUpdate(keys=torch.zeros(2, 4)), PendingUpdate(keys=torch.ones(3, 4))]
    )
    assert keys.keys.shape == (5, 4) and keys.index is None and keys.embeddings == ()
    assert PendingUpdate.merge([PendingUpdate(), PendingUpdate()]) == PendingUpdate()
