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


def legend_texts(fig):
    legend = fig.axes[0].get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else None


def test_legend_names_the_classes(tmp_path):
    x, y = features()
    names = ["T-shirt/top", "Trouser", "Pullover"]
    fig = plot_embedding(x, y, tmp_path / "n.png", method="pca", class_names=names)
    check_png(tmp_path / "n.png")
    assert legend_texts(fig) == names
    # without names: the labels' numbers, one entry per class present (all 10 of 10, not a subset)
    y10 = torch.arange(60) % 10
    assert legend_texts(plot_embedding(x, y10, tmp_path / "d.png", method="pca")) == [
        str(c) for c in range(10)
    ]
    # a subsample that misses a class lists only the classes it shows
    y_missing = torch.where(y == 1, torch.zeros_like(y), y)
    fig = plot_embedding(x, y_missing, tmp_path / "m.png", method="pca", class_names=names)
    assert legend_texts(fig) == ["T-shirt/top", "Pullover"]
    with pytest.raises(ValueError, match="class_names has 2 names"):
        plot_embedding(x, y, tmp_path / "x.png", method="pca", class_names=names[:2])


def test_many_classes_have_no_legend(tmp_path):
    x, _ = features(100)
    fig = plot_embedding(x, torch.arange(100) % 25, tmp_path / "many.png", method="pca")
    check_png(tmp_path / "many.png")
    assert legend_texts(fig) is None


class _Embedder(torch.nn.Module):
    cld_enabled = False

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def embed(self, x):
        return torch.nn.functional.normalize(self.lin(x), dim=1)


class _Data:
    """The two evaluation loaders of a datamodule (memory, test) and its class names."""

    def __init__(self, class_names):
        x, y = features()
        batch = (x, y, torch.arange(len(y)))
        self.loaders = [[batch], [batch]]
        self.class_names = class_names

    def val_dataloader(self):
        return self.loaders


def test_write_plots_names_the_data_sets_classes(tmp_path, monkeypatch):
    import cld_lightning.eval as ev  # write_plots imports plot_embedding from here when called
    from cld_lightning import dashboards

    seen = {}
    original = ev.plot_embedding

    def spy(*args, **kwargs):
        seen.update(kwargs)
        kwargs["method"] = "pca"  # fast
        return original(*args, **kwargs)

    monkeypatch.setattr(ev, "plot_embedding", spy)
    names = ["cat", "dog", "ship"]
    written = dashboards.write_plots(_Embedder(), _Data(names), tmp_path, [])
    assert seen["class_names"] == names
    check_png(tmp_path / "plots" / "embedding.png")
    assert set(written) == {"plots/embedding"}
    seen.clear()
    dashboards.write_plots(_Embedder(), _Data([]), tmp_path, [])  # no names: numbers
    assert seen["class_names"] is None
