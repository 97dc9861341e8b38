"""Learning-rate schedule: linear warm-up then cosine decay, per optimiser step."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, cosine: bool = True, min_factor: float = 0.0
) -> float:
    """LR multiplier at ``step``: ``(step+1)/warmup`` during warm-up, then half-cosine to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
