"""The LLM slot's extension points, each with a do-nothing default.

- ``TextFusion``: rewrites the text embeddings with the image before the LLM (LLaVA-Mini's pre-fusion) and may
  keep some streams for itself (they never reach the LLM). Default ``NoTextFusion``.
- ``AttentionPolicy``: who may attend to whom in the fused sequence (VoCo-LLaMA hides the image behind its
  compression tokens). Default ``CausalAttention``.
- ``DecodingPolicy``: how the LLM runs while generating (FastV, FitPrune, SparseVLM prune visual tokens inside
  it) — it hands the decoding loop a ``Stepper``. Default ``PlainDecoding``.

A new scheme subclasses one of them in its own file; ``VLM``, ``fusion.py`` and ``generation.py`` stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import lightning as L
from torch import Tensor

from tokencompose.parts import Checks
from tokencompose.types import VisualSequence

if TYPE_CHECKING:
    from tokencompose.llm.causal_lm import CausalLM
    from tokencompose.llm.fusion import FusedInputs


class TextFusion(L.LightningModule, Checks):
    """Fuses the images into the text embeddings before the LLM; may keep streams to itself."""

    def context_streams(self) -> frozenset[str]:
        """Streams only this fusion sees; they do not reach the LLM (and do not count in its budget)."""
        return frozenset()

    def forward(self, text: Tensor, instruction: Tensor, visual: VisualSequence, to_llm: Tensor, counts: Tensor,
                blank_images: Callable[[int], VisualSequence]) -> tuple[Tensor, Tensor]:
        """text (B, T, D) embeddings, instruction (B, T) bool (positions fusion may read: no answer, no padding),
        visual (I, N, D) every stream of every image in placeholder order, to_llm (N,) bool, counts (B,) images
        per sample, blank_images(n) -> n encoded blank images -> (text (B, T, D), tokens for the LLM (I, N', D))."""
        return text, visual.tokens[:, to_llm]


class NoTextFusion(TextFusion):
    """The text reaches the LLM as embedded; every stream goes to the LLM."""


class AttentionPolicy(L.LightningModule, Checks):
    """Sets who may attend to whom in a fused sequence (``FusedInputs.allowed`` / ``decode_keys``)."""

    #: whether the policy changes the causal mask (a decoding policy that runs the layers itself must honour it)
    changes_mask: bool = False

    def forward(self, fused: FusedInputs, kinds: tuple[str, ...]) -> FusedInputs:
        """FusedInputs (visual_kind indexes ``kinds``) -> the same, with its visibility set."""
        return fused


class CausalAttention(AttentionPolicy):
    """Causal attention over the valid positions (the LLM's own)."""


class Stepper(Protocol):
    """One row of greedy decoding at a time, for the whole batch: logits for the next token."""

    def first(self) -> Tensor:
        """Logits (B, V) for the token after the prompt."""

    def next(self, embeds: Tensor, positions: Tensor) -> Tensor:
        """Append one token (B, 1, D) at positions (B, 1) -> logits (B, V) for the token after it."""


class DecodingPolicy(L.LightningModule, Checks):
    """How the LLM runs when generating: gives the decoding loop its stepper."""

    def stepper(self, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> Stepper:
        from tokencompose.llm.generation import PlainStepper

        return PlainStepper(lm, prompt, use_cache)

    def kept_fraction(self, visual_tokens: int, layers: int) -> float:
        """The mean fraction of the prompt's visual tokens each LLM layer processes (for cost estimates)."""
        return 1.0


class PlainDecoding(DecodingPolicy):
    """The LLM as it is."""
