"""What a part may check about its neighbours when a ``VLM`` is built.

Every part (encoder, visual tokenizers, scaler, and each extension point) answers ``problems(parts)``: the
things it needs from the others that they do not give. ``VLM`` asks them all and raises once, naming every
problem with the recipe key of the part that has it, before any weight is loaded or any image is seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokencompose.encoders.base import VisionEncoder
    from tokencompose.llm.base import AttentionPolicy, DecodingPolicy, TextFusion
    from tokencompose.llm.causal_lm import CausalLM
    from tokencompose.masks.base import ObjectSource
    from tokencompose.tokenizers.base import BudgetSchedule, VisualTokenizer


@dataclass(frozen=True)
class Parts:
    """A read-only view of a model's parts, by slot."""

    encoder: VisionEncoder
    tokenizers: Mapping[str, VisualTokenizer]
    llm: CausalLM
    object_source: ObjectSource
    text_fusion: TextFusion
    attention: AttentionPolicy
    decoding: DecodingPolicy
    budget_schedule: BudgetSchedule

    @property
    def streams(self) -> list[str]:
        """The visual token streams, in the order they reach the LLM."""
        return list(self.tokenizers)


class Checks:
    """Mixin: a part that can say, at build time, what it needs from its neighbours."""

    def problems(self, parts: Parts) -> list[str]:
        """Everything this part needs from the others that they do not give; empty when it can run."""
        return []


def stream_problem(what: str, name: str, parts: Parts) -> list[str]:
    """[] if ``name`` is a stream of the model, else one message naming ``what`` and the streams there are."""
    return [] if name in parts.tokenizers else [f"{what}={name!r} is not a stream; the streams are {parts.streams}"]
