"""The paper recipes run what the reference code runs (issue 11): the ImageNet CLD recipes'
crops, lr and shared NormMLP hidden layer, InfoMin's jigsaw input and head, the CIFAR-100
MoCo+CLD augmentation, NPID's fp32 logits under autocast, and the best-epoch kNN record."""

from __future__ import annotations

from typing import Any

import hydra
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cld_lightning.app.config_check import check_cld
from cld_lightning.cld import cross_level_loss
from cld_lightning.cld.heads import NormLinear
from cld_lightning.losses import (
    infonce_loss,
    jigsaw_patches,
    jigsaw_permutation,
    npid_logits,
    npid_softmax_loss,
)
from cld_lightning.methods import NPID, InfoMin
from tests.helpers import quiet_trainer, tiny_backbone


class Stub2048(nn.Module):
    """A backbone with ResNet-50's 2048-d feature, for counting head parameters."""

    feature_dim = 2048

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def instantiate_method(cfg: Any, backbone: nn.Module, **overrides: Any) -> Any:
    from cld_lightning.app.build import takes_num_samples

    torch.manual_seed(0)
    overrides.setdefault("channels_last", False)  # `auto` is cld-train's to resolve
    if takes_num_samples(cfg.method):  # NPID's bank rows; the other methods take none
        overrides.setdefault("num_samples", 64)
    return hydra.utils.instantiate(
        cfg.method,
        backbone=backbone,
        cld=check_cld(cfg.cld),
        _convert_="all",
        **overrides,
    )


def record_inputs(module: nn.Module) -> tuple[list[torch.Tensor], Any]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    return seen, handle


def saw(seen: list[torch.Tensor], x: torch.Tensor) -> bool:
    return any(s.shape == x.shape and torch.equal(s, x) for s in seen)


# --------------------------------------------------------------------------- recipes
def test_imagenet_mocov2_cld_runs_three_crops_as_the_reference(compose_train) -> None:
    cfg = compose_train("experiment=imagenet_mocov2_cld", tiny=False)
    assert (cfg.method.num_crops, cfg.data.num_views) == (3, 3)
    assert (cfg.method.lr, cfg.data.batch_size * cfg.trainer.devices) == (0.2, 512)
    assert cfg.data.augmentation == "mocov2" and cfg.cld.share_hidden is True
    model = instantiate_method(cfg, tiny_backbone())
    torch.manual_seed(1)
    views = [torch.randn(8, 3, 16, 16) for _ in range(3)]
    q_seen, h1 = record_inputs(model.backbone)
    k_seen, h2 = record_inputs(model.momentum_encoder["backbone"])
    losses, pending = model.compute_loss((views, torch.zeros(8).long(), torch.arange(8)), 0)
    h1.remove(), h2.remove()
    # two query crops through the query encoder, the third through the key encoder only
    assert saw(q_seen, views[0]) and saw(q_seen, views[1]) and not saw(q_seen, views[2])
    assert saw(k_seen, views[2]) and len(k_seen) == 1
    k = model.key_embedding(views[2])
    torch.testing.assert_close(pending.keys, k)
    queue = model.queue.queue.clone()
    f0, f1 = model.features(views[0]), model.features(views[1])
    inst = [infonce_loss(model.instance_embedding(f), k, queue, 0.2) for f in (f0, f1)]
    torch.testing.assert_close(losses["instance_loss"], (inst[0] + inst[1]) / 2)  # two terms
    g0, g1 = (F.normalize(model.group_head(f), dim=1) for f in (f0, f1))
    torch.testing.assert_close(losses["cld_weighted"], 0.25 * cross_level_loss(g0, g1, 120, 0.4))


def test_imagenet_infomin_cld_runs_three_crops_and_a_jigsaw_image(compose_train) -> None:
    cfg = compose_train("experiment=imagenet_infomin_cld", tiny=False)
    assert (cfg.method.num_crops, cfg.data.num_views, cfg.method.jigsaw_view) == (3, 4, 3)
    assert cfg.data.augmentation == "infomin_jigsaw"
    # --learning_rate 0.2 --batch_size 512 --epochs 100, 5 warm-up epochs (batch > 256)
    assert (cfg.method.lr, cfg.data.batch_size * cfg.trainer.devices) == (0.2, 512)
    assert (cfg.trainer.max_epochs, cfg.method.warmup_epochs) == (100, 5)
    assert (cfg.method.temperature, cfg.cld.temperature, cfg.cld.weight) == (0.15, 0.8, 0.25)
    model = instantiate_method(cfg, tiny_backbone())
    assert isinstance(model.jigsaw_head.aggregate, NormLinear)  # infomin/utils.py JigsawHead fc2
    torch.manual_seed(1)
    views = [torch.randn(4, 3, 32, 32) for _ in range(3)] + [torch.randn(4, 3, 36, 36)]
    q_seen, h1 = record_inputs(model.backbone)
    k_seen, h2 = record_inputs(model.momentum_encoder["backbone"])
    losses, _ = model.compute_loss((views, torch.zeros(4).long(), torch.arange(4)), 0)
    h1.remove(), h2.remove()
    assert saw(q_seen, views[0]) and saw(q_seen, views[1]) and saw(k_seen, views[2])
    # the jigsaw patches come from view 3: 3x3 cells of 12 px, one 9-px patch each (64/85)
    patch_batches = [s for s in q_seen if s.shape[0] == 4 * 9]
    assert len(patch_batches) == 1 and patch_batches[0].shape[1:] == (3, 9, 9)
    views3 = views[3]
    for b in range(4):  # every patch is a crop of its own image's view 3
        for patch in patch_batches[0][9 * b : 9 * b + 9]:
            windows = views3[b].unfold(1, 9, 1).unfold(2, 9, 1)  # [3, 28, 28, 9, 9]
            diff = (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4))
            assert float(diff.min()) == 0.0
    k = model.key_embedding(views[2])
    queue = model.queue.queue.clone()
    moco = [infonce_loss(model.embed(v), k, queue, 0.15) for v in views[:2]]
    torch.testing.assert_close(losses["moco_loss"], (moco[0] + moco[1]) / 2)
    torch.testing.assert_close(
        losses["instance_loss"], 0.5 * losses["moco_loss"] + 0.5 * losses["jigsaw_loss"]
    )


def test_jigsaw_head_is_the_reference_formula() -> None:
    """infomin/utils.py JigsawHead(head='normmlp'): fc1 = Linear-ReLU-NormLinear per patch (raw
    cosines), shuffle within each image, concatenate, fc2 = NormLinear, L2-normalise."""
    torch.manual_seed(0)
    model = InfoMin(tiny_backbone(), {"enabled": False}, instance_head="normmlp")
    model.jigsaw_patch_size = None  # the reference proportion: 64/85 of a cell
    x = torch.rand(2, 3, 36, 36)
    x[1] = x[0]  # identical images still get their own patch offsets
    torch.manual_seed(5)
    q_jig, perm = model.jigsaw_embedding(x)
    torch.manual_seed(5)
    patches = jigsaw_patches(x, 3, 9)  # 12-px cells, round(12·64/85) = 9-px patches
    assert torch.equal(perm, jigsaw_permutation(2, 9))
    assert not torch.equal(patches[:9], patches[9:])  # per-image jitter
    fc1, fc2 = model.jigsaw_head.patch_head, model.jigsaw_head.aggregate
    h = torch.relu(fc1[0](model.backbone(patches[perm])))
    cos = F.normalize(h, dim=1) @ F.normalize(fc1[2].weight, dim=0)  # not re-normalised
    y = F.normalize(cos.reshape(2, 9 * 128), dim=1) @ F.normalize(fc2.weight, dim=0)
    torch.testing.assert_close(q_jig, F.normalize(y, dim=1))
    assert fc1[2].normalize_output is False and isinstance(fc2, NormLinear)
    assert fc1[0] is not model.instance_head[0]  # the jigsaw head owns its hidden layer


def test_cifar_moco_cld_augmentations_follow_the_scripts(compose_train) -> None:
    # train_cifar100_moco_cld.sh has no --aug-plus: the plain CIFAR pipeline
    assert compose_train("experiment=cifar100_moco_cld", tiny=False).data.augmentation == "npid"
    # train_cifar10_moco_cld.sh: --aug-plus --erasing
    c10 = compose_train("experiment=cifar10_moco_cld", tiny=False)
    assert c10.data.augmentation == "mocov2_erasing"


# --------------------------------------------------------------------------- shared hidden
def head_parameters(model: nn.Module) -> int:
    params = {id(p): p for m in (model.instance_head, model.group_head) for p in m.parameters()}
    return sum(p.numel() for p in params.values())


@pytest.mark.parametrize("experiment", ["imagenet_mocov2_cld", "imagenet_infomin_cld"])
def test_imagenet_heads_share_one_hidden_layer(experiment: str, compose_train, tmp_path) -> None:
    cfg = compose_train(f"experiment={experiment}", tiny=False)
    model = instantiate_method(cfg, Stub2048())
    inst, group = model.instance_head, model.group_head
    assert inst[0].weight is group[0].weight and inst[0].bias is group[0].bias
    assert inst[2] is not group[2]  # one final NormLinear per head
    assert isinstance(group[2], NormLinear) and isinstance(inst[2], NormLinear)
    # 2048x2048 (+bias) shared + two 2048x128 NormLinear: 4.7M, not 8.9M
    assert head_parameters(model) == 2048 * 2048 + 2048 + 2 * 2048 * 128 == 4_720_640
    # the optimiser sees the shared layer once
    n_opt = sum(1 for p in model.parameters() if p is inst[0].weight)
    assert n_opt == 1
    # L_CLD's gradient reaches the shared hidden layer
    x1, x2 = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    model.cld_loss(model.features(x1), model.features(x2)).backward()
    assert inst[0].weight.grad is not None and float(inst[0].weight.grad.abs().sum()) > 0
    # the key encoder holds its own (EMA) copy of the instance head, hidden layer included
    key_head = model.momentum_encoder["head"]
    assert key_head[0].weight is not inst[0].weight
    torch.testing.assert_close(key_head[0].weight, inst[0].weight)
    # a checkpoint round trip keeps the sharing and the values
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = instantiate_method(cfg, Stub2048())
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    assert fresh.instance_head[0].weight is fresh.group_head[0].weight
    torch.testing.assert_close(fresh.group_head[0].weight, group[0].weight)


def test_separate_hidden_layers_are_an_option(compose_train) -> None:
    cfg = compose_train("experiment=imagenet_mocov2_cld", "cld.share_hidden=false", tiny=False)
    model = instantiate_method(cfg, Stub2048())
    assert model.instance_head[0].weight is not model.group_head[0].weight
    assert head_parameters(model) == 2 * (2048 * 2048 + 2048 + 2048 * 128)  # 8.9M
    x1, x2 = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    model.cld_loss(model.features(x1), model.features(x2)).backward()
    assert model.instance_head[0].weight.grad is None  # L_CLD no longer reaches f_I


def test_shared_hidden_width_mismatch_names_the_key(compose_train) -> None:
    cfg = compose_train("experiment=imagenet_mocov2_cld", "cld.hidden_dim=1024", tiny=False)
    with pytest.raises(Exception, match=r"cld.hidden_dim=1024 .*cld.share_hidden=false"):
        instantiate_method(cfg, Stub2048())


# --------------------------------------------------------------------------- NPID precision
def test_npid_logits_are_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(4000, 128), dim=1)
    head = nn.Linear(64, 128)
    x = torch.randn(32, 64)
    index = torch.randint(0, 4000, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = F.normalize(head(x), dim=1)
        assert z.dtype == torch.bfloat16  # what a head produces under bf16 autocast
        logits = npid_logits(z, bank, 0.1)
        loss = npid_softmax_loss(z, bank, index, 0.1)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    exact = z.float() @ bank.t() / 0.1
    torch.testing.assert_close(logits, exact, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, F.cross_entropy(exact, index), atol=1e-6, rtol=0)
    bf16 = (z @ bank.t().to(z.dtype) / 0.1).float().detach()  # the former computation
    assert float((bf16 - exact.detach()).abs().max()) > 5e-3  # bf16 rounding that fp32 avoids


def test_npid_module_loss_under_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    model = NPID(tiny_backbone(), 64, {"enabled": False}, num_views=1, gather_distributed=False)
    z = F.normalize(torch.randn(16, 128), dim=1).bfloat16()
    index = torch.arange(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.instance_loss(z, index)
    exact = F.cross_entropy(z.float() @ model.memory.bank.t() / 0.1, index)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, exact, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- kNN best
class Images(Dataset):
    def __init__(self, n: int = 16, views: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 8, 8, generator=g)
        self.views = views

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        x = self.x[i]
        return ([x, x.flip(-1)] if self.views else x), i % 4, i


def test_knn_best_is_a_checkpointed_running_max(monkeypatch, tmp_path) -> None:
    """Validation kNN accuracies 100 (sanity check), 50, 75, 25 -> top1 25, top1_best 75."""

    import cld_lightning.eval.knn_summary as report

    script = iter([1.0, 0.5, 0.75, 0.25])  # fraction of correct test predictions per evaluation

    def scripted_knn(mem_z, mem_y, test_z, num_classes, *args, balanced=(False,), **kwargs):
        n_right = int(round(next(script) * len(test_z)))
        pred = torch.full((len(test_z),), -1, dtype=torch.long)
        pred[:n_right] = torch.arange(len(test_z))[:n_right] % 4  # the targets of Images
        return [pred for _ in balanced]  # the same for the NPID and class-balanced protocols

    monkeypatch.setattr(report, "knn_predictions", scripted_knn)
    torch.manual_seed(0)
    model = NPID(tiny_backbone(), 16, {"enabled": False}, num_views=1, num_classes=4, knn_k=3)
    model.gather_distributed = False
    model.memory.gather_distributed = False
    trainer = quiet_trainer(tmp_path, max_epochs=3, num_sanity_val_steps=1, limit_val_batches=1.0)
    val = [DataLoader(Images(), batch_size=16), DataLoader(Images(), batch_size=16)]
    trainer.fit(model, DataLoader(Images(views=2), batch_size=8), val)
    assert float(trainer.callback_metrics["knn/top1"]) == 25.0  # the last epoch
    assert float(trainer.callback_metrics["knn/top1_best"]) == 75.0  # not the sanity check's 100
    assert float(model.knn_best) == 75.0
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert float(state["knn_best"]) == 75.0
    fresh = NPID(tiny_backbone(), 16, {"enabled": False}, num_views=1, num_classes=4)
    fresh.load_state_dict(state)
    assert float(fresh.knn_best) == 75.0
    del state["knn_best"]  # a checkpoint from before knn_best existed still loads strictly
    fresh.load_state_dict(state)
    assert float(fresh.knn_best) == -1.0
