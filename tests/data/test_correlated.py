"""Highly correlated builder: near-duplicate structure, labels, indices, determinism."""

from __future__ import annotations

import pytest
import torch

from cld_lightning.data import CorrelatedImages, TensorImages
from cld_lightning.data.synthetic import fake_images, write_fake_cifar


def _base(n: int = 30, seed: int = 0) -> TensorImages:
    x, y = fake_images(n, 10, 32, 3, seed)
    return TensorImages(torch.from_numpy(x).permute(0, 3, 1, 2), y)


def _all(src) -> torch.Tensor:
    return torch.stack([src.get_image(i) for i in range(len(src))])


def test_near_duplicate_structure():
    base = _base(30)
    c = CorrelatedImages(base, copies=4, seed=0)
    assert len(c) == 120
    x = _all(c).float().flatten(1)
    d = torch.cdist(x, x)
    src = c.source_of
    same = src[:, None] == src[None, :]
    off_diag = ~torch.eye(len(c), dtype=torch.bool)
    intra, inter = d[same & off_diag].mean(), d[~same].mean()
    assert intra < 0.5 * inter
    d.fill_diagonal_(float("inf"))
    assert (src[d.argmin(1)] == src).float().mean() == 1.0  # nearest neighbour: same source
    # instances are perturbed copies, not exact ones
    assert not torch.equal(c.get_image(0), c.get_image(1))
    assert not torch.equal(c.get_image(0), base.get_image(0))


def test_labels_kept_and_sources_grouped():
    base = _base(30)
    c = CorrelatedImages(base, copies=3, num_sources=7, seed=1)
    assert len(c) == 21 and len(set(c.source_indices.tolist())) == 7
    for i in range(21):
        assert c.targets[i] == base.targets[c.source_index(i)]
        assert c.source_index(i) == int(c.source_indices[i // 3])


def test_deterministic_for_seed_and_fixed_across_reads():
    base = _base(10)
    a = CorrelatedImages(base, copies=3, num_sources=5, seed=7)
    b = CorrelatedImages(base, copies=3, num_sources=5, seed=7)
    other = CorrelatedImages(base, copies=3, num_sources=5, seed=8)
    assert torch.equal(_all(a), _all(b))
    assert torch.equal(_all(a), _all(a))  # same instance every epoch
    assert not torch.equal(a.crop, other.crop)


def test_grayscale_source():
    x, y = fake_images(6, 3, 28, 1, 0)
    c = CorrelatedImages(TensorImages(torch.from_numpy(x).permute(0, 3, 1, 2), y), copies=2)
    assert c.get_image(5).shape == (1, 28, 28) and c.get_image(5).dtype == torch.uint8


@pytest.mark.parametrize("copies", [0, -1, 2.5])
def test_bad_copies(copies):
    with pytest.raises(ValueError, match="data.copies"):
        CorrelatedImages(_base(4), copies=copies)


def test_datamodule_correlated(tmp_path, make_dm):
    write_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=10)
    dm = make_dm("cifar10", tmp_path, copies=5, num_sources=8, seed=3, batch_size=8)
    assert dm.num_train_samples == 40 and len(dm.memory_dataset) == 40
    assert dm.class_counts.sum() == 40
    src = dm.train_dataset.source
    assert dm.train_targets.tolist() == [
        int(src.base.targets[src.source_index(i)]) for i in range(40)
    ]
    seen = []
    for views, target, index in dm.train_dataloader():
        assert len(views) == 2 and views[0].shape == (8, 3, 32, 32)
        assert torch.equal(target, dm.train_targets[index])
        seen += index.tolist()
    assert sorted(seen) == list(range(40))  # every instance once, unique indices
