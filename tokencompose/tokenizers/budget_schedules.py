"""Training budget schedules: which budget of a stream each training step trains with.

- ``AverageOverBudgets`` — M3 (mu-cai/matryoshka-mm ``llava/model/language_model/llava_llama.py``): one forward
  per scale, the loss is their mean.
- ``SampledBudget`` — MQT-LLaVA (gordonhu608/MQT-LLaVA ``get_matry_n``): each step draws one of the stream's
  budgets uniformly; the generator's state is checkpointed, so a resumed run draws what an uninterrupted one does.

Both leave the stream at its configured (test-time) budget after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from tokencompose.parts import Parts, stream_problem
from tokencompose.tokenizers.base import BudgetSchedule, VisualTokenizer


def _schedule_problems(schedule: str, stream: str, parts: Parts) -> list[str]:
    problems = stream_problem("stream", stream, parts)
    if not problems and not parts.tokenizers[stream].budget_variants():
        problems.append(f"{schedule}: stream {stream!r} ({type(parts.tokenizers[stream]).__name__}) has no budgets to vary")
    return problems


class AverageOverBudgets(BudgetSchedule):
    """M3: the mean of the losses at every budget of ``stream`` (one forward each)."""

    def __init__(self, stream: str = "patch") -> None:
        super().__init__()
        self.stream = stream

    def problems(self, parts: Parts) -> list[str]:
        return _schedule_problems("AverageOverBudgets", self.stream, parts)

    def training_loss(self, loss_at: Callable[[], Tensor], tokenizers: Mapping[str, VisualTokenizer]) -> Tensor:
        tokenizer = tokenizers[self.stream]
        configured = tokenizer.current_budget()
        losses = []
        try:
            for budget in tokenizer.budget_variants():
                tokenizer.use_budget(budget)
                losses.append(loss_at())
        finally:
            tokenizer.use_budget(configured)
        return torch.stack(losses).mean()


class SampledBudget(BudgetSchedule):
    """MQT: each step trains with one budget of ``stream`` drawn uniformly from its variants.

    The draws come from a generator seeded with ``seed`` whose state is part of ``state_dict``
    (``_extra_state``), so resuming from a checkpoint continues the same sequence of budgets.
    """

    def __init__(self, stream: str = "patch", seed: int = 0) -> None:
        super().__init__()
        self.stream = stream
        self.generator = torch.Generator().manual_seed(seed)

    def problems(self, parts: Parts) -> list[str]:
        return _schedule_problems("SampledBudget", self.stream, parts)

    def get_extra_state(self) -> Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    def draw(self, variants: list[Any]) -> Any:
        return variants[int(torch.randint(len(variants), (), generator=self.generator))]

    def training_loss(self, loss_at: Callable[[], Tensor], tokenizers: Mapping[str, VisualTokenizer]) -> Tensor:
        tokenizer = tokenizers[self.stream]
        configured = tokenizer.current_budget()
        tokenizer.use_budget(self.draw(tokenizer.budget_variants()))
        try:
            return loss_at()
        finally:
            tokenizer.use_budget(configured)
