"""Figures: 2-D embedding maps and cluster-size histograms, written as PNG without a display.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, so
no pyplot state or global backend is touched and no display is needed. matplotlib, scikit-learn
and umap are imported only when a plot is made.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from cld_lightning.eval._checks import as_feature_matrix, as_label_vector, check_same_length

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Method = Literal["tsne", "umap", "pca"]


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: optional dependency
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, dpi: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight")


def pca_2d(x: Tensor) -> Tensor:
    """Project rows of ``x`` on their two leading principal components (``[N, 2]``)."""
    centred = x.double() - x.double().mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    proj = centred @ v[:2].T
    if proj.shape[1] < 2:  # one-dimensional features
        proj = torch.cat([proj, torch.zeros(proj.shape[0], 2 - proj.shape[1], dtype=proj.dtype)], 1)
    return proj


def embed_2d(x: Tensor, method: str = "tsne", seed: int = 0) -> tuple[Tensor, str]:
    """2-D coordinates of ``x`` and the method actually used (falls back to PCA with a warning)."""
    if method not in ("tsne", "umap", "pca"):
        raise ValueError(f"method must be 'tsne', 'umap' or 'pca', got {method!r}")
    n = x.shape[0]
    if method == "tsne":
        if importlib.util.find_spec("sklearn") is None:
            warnings.warn("scikit-learn not installed: plotting PCA instead of t-SNE", stacklevel=3)
        elif n > 3:
            from sklearn.manifold import TSNE  # lazy: optional dependency

            perplexity = float(min(30, (n - 1) / 3))
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
            return torch.from_numpy(tsne.fit_transform(x.double().numpy())), "tsne"
    if method == "umap":
        if importlib.util.find_spec("umap") is None:
            warnings.warn("umap-learn not installed: plotting PCA instead of UMAP", stacklevel=3)
        elif n > 3:
            import umap  # lazy: optional dependency

            coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(x.double().numpy())
            return torch.as_tensor(coords), "umap"
    return pca_2d(x), "pca"


def plot_embedding(
    features: Tensor,
    labels: Tensor | None,
    path: str | Path,
    method: Method = "tsne",
    max_points: int | None = 5000,
    seed: int = 0,
    title: str | None = None,
    dpi: int = 120,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Scatter a 2-D map of ``features`` coloured by ``labels``; save a PNG at ``path``.

    Args:
        features: ``[N, D]``.
        labels: ``[N]`` integer labels (colours), or ``None`` for one colour.
        path: output PNG (parent folders are created).
        method: ``"tsne"`` (scikit-learn), ``"umap"`` (umap-learn) or ``"pca"``; a missing
            package falls back to PCA with a warning.
        max_points: random subsample (seeded) above this many points; ``None`` keeps all.
        seed: seed of the subsample and of t-SNE/UMAP.
        class_names: name of each label (``class_names[c]`` for label ``c``), shown in the legend
            (fewer than 20 classes); ``None`` or empty: the labels' numbers.
    """
    features = as_feature_matrix(features, "features").detach().cpu()
    if features.shape[0] < 2:
        raise ValueError(f"features needs at least 2 rows to plot, got {features.shape[0]}")
    if labels is not None:
        labels = as_label_vector(labels, "labels").cpu()
        check_same_length(features, labels, "features", "labels")
        if class_names and labels.numel() and int(labels.max()) >= len(class_names):
            raise ValueError(
                f"class_names has {len(class_names)} names but labels go up to {int(labels.max())}"
            )
    if max_points is not None and features.shape[0] > max_points:
        keep = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(seed))
        keep = keep[:max_points]
        features = features[keep]
        labels = labels[keep] if labels is not None else None
    coords, used = embed_2d(features, method, seed)
    fig = _new_figure((6.0, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    xs, ys = coords[:, 0].numpy(), coords[:, 1].numpy()
    if labels is None:
        ax.scatter(xs, ys, s=4)
    elif int(labels.max()) < 20:  # one colour per class, a legend entry per class present
        _scatter_classes(ax, xs, ys, labels, class_names)
    else:
        ax.scatter(xs, ys, c=labels.numpy(), s=4, cmap="tab20")
    ax.set_title(title or f"{used.upper()} of {features.shape[0]} embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, path, dpi)
    return fig


def _scatter_classes(
    ax: Any, xs: Any, ys: Any, labels: Tensor, class_names: Sequence[str] | None
) -> None:
    """Scatter with colour ``tab10``/``tab20``[label] and a legend naming each class present."""
    from matplotlib import colormaps  # lazy: optional dependency
    from matplotlib.lines import Line2D

    cmap = colormaps["tab10" if int(labels.max()) < 10 else "tab20"]
    ax.scatter(xs, ys, c=cmap(labels.numpy()), s=4)  # integer inputs index the colour table
    handles = [
        Line2D(
            [], [], marker="o", linestyle="", markersize=5, color=cmap(c),
            label=class_names[c] if class_names else str(c),
        )
        for c in sorted(set(labels.tolist()))
    ]  # fmt: skip
    ax.legend(  # outside the map, on the right (the PNG is cropped to what is drawn)
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize="small",
        title="class",
    )


def plot_cluster_sizes(
    sizes: Tensor | Sequence[int],
    path: str | Path,
    bins: int = 30,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    """Histogram of cluster sizes (one count per cluster); save a PNG at ``path``."""
    sizes_t = torch.as_tensor(sizes).detach().cpu().flatten()
    if sizes_t.numel() == 0:
        raise ValueError("sizes must hold at least one cluster size, got none")
    if sizes_t.is_complex() or sizes_t.dtype == torch.bool or bool((sizes_t < 0).any()):
        raise ValueError("sizes must be non-negative cluster sizes")
    fig = _new_figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(sizes_t.double().numpy(), bins=bins, color="tab:blue", edgecolor="white")
    ax.set_xlabel("cluster size")
    ax.set_ylabel("number of clusters")
    empty = int((sizes_t == 0).sum())
    ax.set_title(title or f"{sizes_t.numel()} clusters, {empty} empty")
    _save(fig, path, dpi)
    return fig
