"""Optimiser settings and the warmup + cosine schedule (LLaVA-1.5: AdamW, wd 0, warmup 3%, cosine)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)


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


class NonFiniteGuard:
    """Never steps on a non-finite loss or gradient: ``check`` drops the gradients (AdamW then skips every
    parameter) and counts the step; ``limit`` such steps in a row stop training with an error.

    ``reduce`` sums a flag over ranks (the strategy's reduce), so every rank skips together: a skip never
    desynchronises DDP replicas or FSDP shards.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"model.optimization.max_nonfinite_steps={limit}; must be >= 1")
        self.limit = limit
        self.skipped = 0
        self.in_a_row = 0

    def check(self, optimizer: torch.optim.Optimizer, reduce: Callable[[Tensor], Tensor], step: int) -> bool:
        """True (and the gradients dropped) when this step must be skipped."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.zeros((), device=device)
        if not reduce((~torch.isfinite(norm)).float()).item():
            self.in_a_row = 0
            return False
        optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.in_a_row += 1
        log.warning("step %d: non-finite loss or gradient; optimizer step skipped (%d skipped, %d in a row)",
                    step, self.skipped, self.in_a_row)
        if self.in_a_row >= self.limit:
            raise FloatingPointError(
                f"training stopped at step {step}: {self.limit} optimizer steps in a row had a non-finite loss or "
                f"gradient ({self.skipped} skipped in all). Check the data (NaN/Inf inputs), the learning rate and "
                "the precision; `model.optimization.max_nonfinite_steps` sets the limit"
            )
        return True
