"""Plots write readable PNG files without a display."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from PIL import Image

from cld_lightning.eval import plot_cluster_sizes, plot_embedding
from cld_lightning.eval.plots import pca_2d

pytest.importorskip("matplotlib")


def features(n=60):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    return torch.randn(3, 8, generator=gen)[labels] + 0.2 * torch.randn(n, 8, generator=gen), labels


def check_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding_writes_png(tmp_path, method):
    if method == "tsne" and importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn not installed")
    x, y = features()
    path = tmp_path / "sub" / f"{method}.png"
    fig = plot_embedding(x, y, path, method=method)
    check_png(path)
    assert method.upper() in fig.axes[0].get_title()


def test_umap_falls_back_to_pca_when_missing(tmp_path):
    if importlib.util.find_spec("umap") is not None:
        pytest.skip("umap installed")
    x, y = features()
    with pytest.warns(UserWarning, match="umap"):
        fig = plot_embedding(x, y, tmp_path / "u.png", method="umap")
    check_png(tmp_path / "u.png")
    assert "PCA" in fig.axes[0].get_title()


def test_plot_embedding_subsamples_and_unlabelled(tmp_path):
    x, _ = features(100)
    fig = plot_embedding(x, None, tmp_path / "p.png", method="pca", max_points=30)
    check_png(tmp_path / "p.png")
    assert len(fig.axes[0].collections[0].get_offsets()) == 30


def test_pca_matches_leading_direction():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, generator=gen) * torch.tensor([[3.0, 0.0, 0.0]])
    x = x + 0.01 * torch.randn(200, 3, generator=gen)
    proj = pca_2d(x)
    assert proj.shape == (200, 2)
    assert torch.allclose(proj[:, 0].abs(), (x[:, 0] - x[:, 0].mean()).double().abs(), atol=0.05)


def test_plot_cluster_sizes(tmp_path):
    path = tmp_path / "sizes.png"
    fig = plot_cluster_sizes(torch.tensor([0, 3, 5, 5, 10, 40]), path)
    check_png(path)
    assert "6 clusters, 1 empty" in fig.axes[0].get_title()


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="method"):
        plot_embedding(*features(), tmp_path / "x.png", method="mds")
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(features()[0], torch.zeros(3, dtype=torch.long), tmp_path / "x.png")
    with pytest.raises(ValueError, match="sizes"):
        plot_cluster_sizes([], tmp_path / "x.png")
