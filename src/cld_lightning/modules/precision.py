"""Dtype helper shared by the losses (pure torch, no Lightning)."""

from __future__ import annotations

import torch
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """Half-precision inputs (mixed precision: fp16, bf16) upcast to fp32; fp32/fp64 kept.

    Logits divided by a small temperature amplify rounding: InfoNCE, NPID and CLD compute theirs
    in fp32 at least (CLD.md §3 on the reference's apex O1)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
