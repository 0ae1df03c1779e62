"""Optimiser settings and the warmup + cosine schedule (LLaVA-1.5: AdamW, wd 0, warmup 3%, cosine)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Optimization:
    """AdamW settings. ``learning_rates`` overrides ``lr`` per part: keys among the model's parts with
    parameters (``encoder``, ``tokenizers``, ``scaler``, ``projectors``, ``llm``, ``prefusion``, ...).
    ``max_nonfinite_steps``: training stops after this many optimizer steps in a row had a non-finite loss or
    gradient (each is skipped, never stepped on)."""

    lr: float = 2e-5
    learning_rates: dict[str, float] | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    max_nonfinite_steps: int = 10


def warmup_cosine(step: int, total_steps: int, warmup_ratio: float, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at ``step``: linear warmup to 1, then cosine down to ``min_lr_ratio``."""
    warmup = math.ceil(total_steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
