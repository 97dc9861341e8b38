"""The kNN baselines: raw pixels and the same network untrained, same protocol as ``knn/top1``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cld_lightning.eval import weighted_knn
from cld_lightning.eval.baselines import knn_baselines, pixel_embed, reinitialized_copy
from cld_lightning.methods import NPID
from cld_lightning.models import build_backbone


def _loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y, torch.arange(len(y))), batch_size=16)


def _npid(seed: int = 0) -> NPID:
    torch.manual_seed(seed)
    return NPID(build_backbone("small_cnn", 4, 1), num_samples=8, cld={"enabled": False})


def test_reinitialized_copy_is_seeded_untrained_and_leaves_model_and_rng_alone() -> None:
    model = _npid()
    with torch.no_grad():  # "train" it: move every parameter and the BN statistics
        for p in model.parameters():
            p.add_(1.0)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    a, b, c = (
        reinitialized_copy(model, 1),
        reinitialized_copy(model, 1),
        reinitialized_copy(model, 2),
    )
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the trained model is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    conv = "backbone.features.0.weight"
    assert torch.equal(sa[conv], sb[conv]) and not torch.equal(sa[conv], sc[conv])
    assert not torch.equal(sa[conv], before[conv])
    # an untrained copy equals a freshly constructed model's initial distribution: BN reset
    assert torch.equal(sa["backbone.features.1.running_mean"], torch.zeros(4))
    assert torch.equal(sa["backbone.features.1.weight"], torch.ones(4))
    # the default init scale (kaiming-uniform bound for a 3x3 conv on 1 channel: 1/3)
    assert sa[conv].abs().max() <= 1 / 3 + 1e-6 and sa[conv].abs().max() > 0.25


def test_pixel_baseline_is_weighted_knn_on_normalised_flat_images() -> None:
    g = torch.Generator().manual_seed(0)
    mem_x, test_x = torch.rand(40, 1, 6, 6, generator=g), torch.rand(12, 1, 6, 6, generator=g)
    mem_y, test_y = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (12,), generator=g)
    model = _npid()
    out = knn_baselines(
        model, _loader(mem_x, mem_y), _loader(test_x, test_y), 3, k=5, temperature=0.1
    )
    pred = weighted_knn(
        F.normalize(mem_x.flatten(1), dim=1),
        mem_y,
        F.normalize(test_x.flatten(1), dim=1),
        3,
        5,
        0.1,
    )
    assert out["knn/pixel_top1"] == float((pred == test_y).float().mean() * 100.0)
    assert torch.allclose(pixel_embed(mem_x).norm(dim=1), torch.ones(40))
    prefixes = ("knn/pixel_", "knn/random_init_", "knn/random_init_backbone_", "knn/backbone_")
    names = ("top1", "balanced_top1", "mean_class_top1", "balanced_mean_class_top1")
    assert set(out) == {p + n for p in prefixes for n in names}  # no long tail: no shot groups
    balanced = weighted_knn(
        F.normalize(mem_x.flatten(1), dim=1),
        mem_y,
        F.normalize(test_x.flatten(1), dim=1),
        3,
        5,
        0.1,
        balanced=True,
    )
    assert out["knn/pixel_balanced_top1"] == float((balanced == test_y).float().mean() * 100.0)


def test_pixel_baseline_recovers_labels_that_pixels_encode() -> None:
    # classes = bright left half vs bright right half: pixel kNN is perfect, noise labels are not
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, 4, 4, generator=g) * 0.1
    y = torch.arange(60) % 2
    x[y == 0, :, :, :2] += 1.0
    x[y == 1, :, :, 2:] += 1.0
    model = _npid()
    out = knn_baselines(model, _loader(x[:40], y[:40]), _loader(x[40:], y[40:]), 2, k=5)
    assert out["knn/pixel_top1"] == 100.0
    noisy = knn_baselines(model, _loader(x[:40], 1 - y[:40]), _loader(x[40:], y[40:]), 2, k=5)
    assert noisy["knn/pixel_top1"] == 0.0


def test_baselines_equal_direct_knn_of_the_untrained_copy_and_the_trained_backbone() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(48, 1, 8, 8, generator=g), torch.arange(48) % 4
    model = _npid()
    mem, test = _loader(x[:32], y[:32]), _loader(x[32:], y[32:])
    out = knn_baselines(model, mem, test, 4, k=3, seed=0)
    # the untrained copy with the model's own seed-0 init reproduces the model's figures
    untouched = reinitialized_copy(model, 0)
    from cld_lightning.eval.baselines import knn_top1

    assert out["knn/random_init_top1"] == knn_top1(untouched, mem, test, 4, k=3)
    assert out["knn/random_init_backbone_top1"] == knn_top1(
        untouched, mem, test, 4, 3, 0.1, untouched.features
    )
    assert out["knn/backbone_top1"] == knn_top1(model, mem, test, 4, 3, 0.1, model.features)


def test_baselines_report_both_protocols_and_shot_groups_on_a_long_tail() -> None:
    """The baselines are :func:`knn_report` under their prefixes: on a long-tailed memory the
    class-balanced and shot-group keys too, equal to a direct report of the pixel features."""
    from cld_lightning.eval import knn_report

    g = torch.Generator().manual_seed(3)
    counts = [40, 20, 8, 3]
    mem_y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    mem_x = torch.rand(len(mem_y), 1, 6, 6, generator=g)
    test_x, test_y = torch.rand(20, 1, 6, 6, generator=g), torch.arange(20) % 4
    out = knn_baselines(_npid(), _loader(mem_x, mem_y), _loader(test_x, test_y), 4, k=10)
    direct = knn_report(pixel_embed(mem_x), mem_y, pixel_embed(test_x), test_y, 4, k=10)
    assert {k: v for k, v in out.items() if k.startswith("knn/pixel_")} == {
        k.replace("knn/", "knn/pixel_"): v for k, v in direct.items() if "shot_" not in k
    }
    # 4 classes, 40 ... 3 images: thirds, one class at each edge
    assert out["knn/shot_rule_paper"] == 0.0
    assert [out[f"knn/shot_classes_{g}"] for g in ("many", "medium", "few")] == [1.0, 2.0, 1.0]
    for p in ("knn/pixel_", "knn/random_init_", "knn/random_init_backbone_", "knn/backbone_"):
        assert {f"{p}many", f"{p}balanced_few", f"{p}balanced_top1"} <= set(out), p
    # long_tail=False: no shot groups even on a long tail
    off = knn_baselines(
        _npid(), _loader(mem_x, mem_y), _loader(test_x, test_y), 4, k=10, long_tail=False
    )
    assert not any("many" in k or "shot_" in k for k in off)
