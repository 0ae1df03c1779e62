"""The visual-tokenizer interface: encoder features (+ object masks) in, a ``TokenStream`` out."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import lightning as L
from torch import nn

from tokencompose.encoders.base import VisionEncoder
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


class VisualTokenizer(L.LightningModule):
    """Turns encoder features into one stream of visual tokens (with a validity mask).

    Every tokenizer can say, before running, how many tokens it emits per image and at what width, so that
    projectors are sized and costs computed without a forward pass.
    """

    @abstractmethod
    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput (+ ObjectMasks) -> TokenStream(tokens (B, N, D), valid (B, N))."""

    def attach(self, encoder: VisionEncoder) -> None:
        """Called once by the model with its encoder, for tokenizers that build or precompute from it."""

    def budget_variants(self) -> list[Any]:
        """Budgets the training loss is averaged over (one forward each, like M3's scales); [] for none."""
        return []

    def use_budget(self, variant: Any) -> None:
        """Switch to one of ``budget_variants()``."""
        raise NotImplementedError(f"{type(self).__name__} has no budget variants")

    #: whether ``project`` does more than project token by token (then a shared projector runs per stream)
    reduces_after_projection: bool = False

    def project(self, stream: TokenStream, projector: nn.Module) -> TokenStream:
        """How this tokenizer's stream passes the projector: TokenStream (B, N, D) -> (B, M, D_llm).

        Default: token by token (M = N). A tokenizer whose reduction acts on projected tokens overrides it
        (M3 projects every patch, then pools).
        """
        return stream.replace(projector(stream.tokens))

    @abstractmethod
    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        """Token slots per image that this stream sends to the LLM (the M of ``project``) for this encoder:
        the most it emits in training with ``training=True``, at test time (its test budget) otherwise —
        whatever mode the module is in now, so a data pipeline can size sequences for either."""

    @abstractmethod
    def output_width(self, encoder: VisionEncoder) -> int:
        """The width D of the tokens ``forward`` returns (the projector's input) for this encoder."""
