"""extract_features: values, order, and no change to training state (modes, BN statistics)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cld_lightning.eval import extract_features, extract_view_pairs


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5))

    def forward(self, x):
        return self.backbone(x)

    def embed(self, x):
        return F.normalize(self.head(self.backbone(x)), dim=1)


def make_loader(n=20, batch_size=6):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 8, 8, generator=gen)
    targets = torch.randint(3, (n,), generator=gen)
    indices = torch.arange(n) + 100
    loader = DataLoader(TensorDataset(images, targets, indices), batch_size=batch_size)
    return loader, images, targets, indices


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_bn_statistics_and_modes_unchanged():
    torch.manual_seed(0)
    model = TinyNet().train()
    model.backbone[1].eval()  # a submodule deliberately kept in eval mode by the user
    modes = {name: m.training for name, m in model.named_modules()}
    before = bn_state(model)
    loader, images, targets, indices = make_loader()

    feats, labels, idx = extract_features(model, loader)

    assert {name: m.training for name, m in model.named_modules()} == modes
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    # control: the same forward in train mode does move the statistics
    model.embed(images)
    assert not torch.equal(model.state_dict()["head.1.running_mean"], before["head.1.running_mean"])


def test_values_order_and_no_grad():
    torch.manual_seed(1)
    model = TinyNet().train()
    loader, images, targets, indices = make_loader()
    feats, labels, idx = extract_features(model, loader, progress=True)
    model.eval()
    with torch.no_grad():
        expected = model.embed(images)
    assert feats.shape == (20, 6) and feats.dtype == torch.float32
    assert torch.allclose(feats, expected, atol=1e-6)
    assert torch.equal(labels, targets) and torch.equal(idx, indices)
    assert not feats.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_embed_fn_and_default_forward():
    torch.manual_seed(2)
    model = TinyNet()
    loader, images, _, _ = make_loader()
    model.eval()
    with torch.no_grad():
        pooled = model.backbone(images)
    feats, _, _ = extract_features(model, loader, embed_fn=model.backbone)
    assert torch.allclose(feats, pooled, atol=1e-6)
    # a module without .embed falls back to its forward
    feats, _, _ = extract_features(model.backbone, loader)
    assert torch.allclose(feats, pooled, atol=1e-6)


def test_mode_restored_after_error():
    model = TinyNet().train()
    bad = [(torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ValueError, match=r"\(image, target, index\)"):
        extract_features(model, bad)
    assert all(m.training for m in model.modules())


def test_bad_embedding_shape():
    loader, _, _, _ = make_loader()
    with pytest.raises(ValueError, match="embed_fn"):
        extract_features(TinyNet(), loader, embed_fn=lambda x: x)


def test_extract_view_pairs():
    torch.manual_seed(3)
    model = TinyNet().train()
    before = bn_state(model)
    v1, v2 = torch.randn(10, 3, 8, 8), torch.randn(10, 3, 8, 8)
    batches = [
        ([v1[:6], v2[:6]], torch.zeros(6), torch.arange(6)),
        ([v1[6:], v2[6:]], torch.zeros(4), torch.arange(6, 10)),
    ]
    z1, z2 = extract_view_pairs(model, batches)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(z1, model.embed(v1), atol=1e-6)
        assert torch.allclose(z2, model.embed(v2), atol=1e-6)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value)
