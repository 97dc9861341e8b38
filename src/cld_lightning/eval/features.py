"""Feature extraction for evaluation, which never changes the model's training state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

EmbedFn = Callable[[Tensor], Tensor]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode under ``torch.no_grad()``; restore each one's mode after.

    Per-submodule modes are restored (not just the top-level flag), so a frozen part that the
    caller kept in eval mode inside a training model stays so.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def default_embed_fn(model: nn.Module) -> EmbedFn:
    """``model.embed`` when the model has one (SSL methods), else the model's forward."""
    embed = getattr(model, "embed", None)
    return embed if callable(embed) else model


def _device_and_embed(
    model: object, device: torch.device | str | None, embed_fn: EmbedFn | None
) -> tuple[torch.device, EmbedFn]:
    """Check ``model`` is a module; the device to run on (default the model's) and the embedding
    function (default :func:`default_embed_fn`)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    return device, embed_fn if embed_fn is not None else default_embed_fn(model)


def _progress(loader: Iterable, enabled: bool, description: str) -> Iterable:
    if not enabled:
        return loader
    from rich.progress import track  # lazy: only for the optional progress bar

    total = len(loader) if hasattr(loader, "__len__") else None
    return track(loader, description=description, total=total)


def _split_batch(batch: object, position: int) -> tuple[object, Tensor, Tensor]:
    if not isinstance(batch, list | tuple) or len(batch) != 3:
        got = (
            f"{type(batch).__name__} of length {len(batch)}"
            if isinstance(batch, list | tuple)
            else type(batch).__name__
        )
        raise ValueError(
            f"loader must yield (image, target, index) batches, got a {got} at batch {position}"
        )
    inputs, target, index = batch
    if not isinstance(target, Tensor) or not isinstance(index, Tensor):
        raise ValueError(
            f"loader batches must hold tensors for target and index, batch {position} holds "
            f"{type(target).__name__} and {type(index).__name__}"
        )
    return inputs, target, index


def extract_features(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    embed_fn: EmbedFn | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Embed every image of ``loader`` with the model in eval mode, without gradients.

    Args:
        model: the network; put in eval mode for the pass, every submodule's mode restored after
            (BatchNorm running statistics are therefore left untouched).
        loader: yields ``(image [B, C, H, W], target [B], index [B])``.
        device: where the forward runs; default the model's device.
        embed_fn: maps an image batch to features; default ``model.embed`` if present, else
            ``model`` itself (e.g. a backbone returning its pooled feature).
        progress: show a rich progress bar.

    Returns:
        ``(features [N, D] float32, labels [N] long, indices [N] long)`` on the CPU, in loader order.
    """
    device, embed = _device_and_embed(model, device, embed_fn)
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    with eval_mode(model):
        for position, batch in enumerate(_progress(loader, progress, "extracting features")):
            images, target, index = _split_batch(batch, position)
            if not isinstance(images, Tensor):
                raise ValueError(
                    f"loader images must be one tensor per batch (the test transform), batch "
                    f"{position} holds a {type(images).__name__}"
                )
            out = embed(images.to(device, non_blocking=True))
            if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"embed_fn must return a [batch, dim] tensor, got {shape} for a batch of "
                    f"{images.shape[0]}"
                )
            feats.append(out.detach().float().cpu())
            labels.append(target.long().cpu())
            indices.append(index.long().cpu())
    if not feats:
        raise ValueError("loader yielded no batches")
    return torch.cat(feats), torch.cat(labels), torch.cat(indices)


def packed_embedding(
    fn: Callable[[Tensor], Tensor | tuple[Tensor, ...]],
) -> tuple[Callable[[Tensor], Tensor], list[int]]:
    """One embed function for several features from one pass: ``fn`` returns a tensor or a tuple
    of ``[B, D_i]`` tensors; the packed function returns them concatenated (float) and fills the
    returned list with the widths ``D_i`` (for ``Tensor.split``) at the first call."""
    widths: list[int] = []

    def packed(x: Tensor) -> Tensor:
        out = fn(x)
        parts = out if isinstance(out, tuple) else (out,)
        widths.extend(p.shape[1] for p in parts[len(widths) :])
        return torch.cat([p.float() for p in parts], dim=1)

    return packed, widths


def extract_view_pairs(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    embed_fn: EmbedFn | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Embed the first two views of every batch of a multi-view loader, labels unused.

    ``loader`` yields ``(views, target, index)`` with ``views`` a list of at least two
    ``[B, C, H, W]`` tensors (the pretraining format). Returns ``(z1 [N, D], z2 [N, D])`` on the
    CPU for :func:`cld_lightning.eval.label_free_metrics`. Same mode guarantees as
    :func:`extract_features`. Seed the loader's augmentations to compare runs on the same views.
    """
    device, embed = _device_and_embed(model, device, embed_fn)
    z1: list[Tensor] = []
    z2: list[Tensor] = []
    with eval_mode(model):
        for position, batch in enumerate(_progress(loader, progress, "embedding view pairs")):
            views, _, _ = _split_batch(batch, position)
            if not isinstance(views, list | tuple) or len(views) < 2:
                raise ValueError(
                    "loader must yield a list of at least two views per batch, batch "
                    f"{position} holds a {type(views).__name__}"
                )
            z1.append(embed(views[0].to(device)).detach().float().cpu())
            z2.append(embed(views[1].to(device)).detach().float().cpu())
    if not z1:
        raise ValueError("loader yielded no batches")
    return torch.cat(z1), torch.cat(z2)
