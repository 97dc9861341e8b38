"""PIRL-style jigsaw for InfoMin (Misra & van der Maaten 2020; Tian et al. 2020), pure functions.

An image is cut into a ``grid x grid`` set of patches; the patches of each image are shuffled by
a random permutation, each patch is encoded by the backbone, and the jigsaw head aggregates the
(shuffled) patch features into one embedding that is contrasted with the key and the queue.
Patches are stored image-major: rows ``[i·P, (i+1)·P)`` of ``[B·P, C, h, w]`` belong to image
``i`` (``P = grid²``), in row-major grid order before shuffling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cld_lightning.losses.infonce import infonce_loss


def jigsaw_patches(
    x: Tensor,
    grid: int = 3,
    patch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cut ``[B, C, H, W]`` into ``[B·grid², C, p, p]`` patches in row-major grid order.

    Each grid cell is ``min(H, W) // grid`` pixels (a remainder at the bottom/right is dropped).
    With ``patch_size < cell`` every patch is a random ``p x p`` crop inside its cell, drawn
    independently per image and per cell (PIRL's jitter, the reference's ``JigsawCrop``: 64-px
    patches in 85-px cells, so that patch borders do not give the arrangement away); ``None`` =
    the whole cell.
    """
    if x.dim() != 4:
        raise ValueError(f"jigsaw expects images [B, C, H, W], got {tuple(x.shape)}")
    b, c, h, w = x.shape
    cell = min(h, w) // grid
    if grid < 1 or cell < 1:
        raise ValueError(f"method.jigsaw_grid={grid} is too large for {h}x{w} images")
    p = cell if patch_size is None else patch_size
    if not 1 <= p <= cell:
        raise ValueError(f"method.jigsaw_patch_size must be in [1, {cell}], got {patch_size}")
    n = grid * grid
    if p < cell:  # offsets [B, P, 2] in [0, cell - p]
        offsets = torch.randint(0, cell - p + 1, (b, n, 2), generator=generator).to(x.device)
    else:
        offsets = torch.zeros((b, n, 2), dtype=torch.long, device=x.device)
    cells = torch.arange(n, device=x.device)
    top = (cells // grid).view(1, n) * cell + offsets[..., 0]  # [B, P]
    left = (cells % grid).view(1, n) * cell + offsets[..., 1]
    span = torch.arange(p, device=x.device)
    rows = (top.unsqueeze(-1) + span).view(b, n, p, 1)  # [B, P, p, 1]
    cols = (left.unsqueeze(-1) + span).view(b, n, 1, p)  # [B, P, 1, p]
    img = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    patches = x.permute(0, 2, 3, 1)[img, rows, cols]  # [B, P, p, p, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(b * n, c, p, p)


def jigsaw_permutation(
    batch_size: int,
    num_patches: int,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices ``[B·P]`` that shuffle the patches *within* each image: image ``i`` reads rows
    ``i·P + randperm(P)`` (PyContrast's ``get_shuffle_ids``)."""
    perms = torch.stack(
        [torch.randperm(num_patches, generator=generator) for _ in range(batch_size)]
    )
    base = torch.arange(batch_size).unsqueeze(1) * num_patches
    return (perms + base).reshape(-1).to(device)


def unshuffle_permutation(perm: Tensor) -> Tensor:
    """The inverse indices: ``shuffled[unshuffle_permutation(perm)] == original``."""
    return torch.argsort(perm)


def jigsaw_instance_loss(
    moco_loss: Tensor,
    q_jigsaw: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """InfoMin's combination ``(1-β)·L_MoCo + β·InfoNCE(q_jigsaw)``: the jigsaw embedding is
    contrasted with the same key and queue as the query crops, whose (crop-averaged) InfoNCE loss
    ``moco_loss`` the caller has computed. Returns ``(total, L_jigsaw)``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"method.jigsaw_weight (β) must be in [0, 1], got {beta}")
    jig = infonce_loss(q_jigsaw, k, queue, temperature)
    return (1.0 - beta) * moco_loss + beta * jig, jig
