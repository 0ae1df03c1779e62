"""The visual-tokenizer interface, and the training budget schedule extension point.

A ``VisualTokenizer`` turns encoder features (+ object masks) into a ``TokenStream``. A tokenizer whose weights
depend on the encoder's width takes it as its first constructor argument ``in_dim`` (as projectors take theirs):
a recipe gives the rest and ``VLM`` supplies ``encoder.hidden_size`` — built whole, never attached later.
Per call, a tokenizer may ask the encoder for more than CLS and patches (``encoder_request``).

A ``BudgetSchedule`` decides which budget each training step uses (M3 averages the loss over its scales, MQT
samples its query count); the default ``FixedBudget`` trains with the configured one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
from torch import Tensor, nn

from tokencompose.encoders.base import VisionEncoder
from tokencompose.parts import Checks
from tokencompose.types import EncoderOutput, EncoderRequest, ObjectMasks, ObjectRequirements, TokenStream


class VisualTokenizer(L.LightningModule, Checks):
    """Turns encoder features into one stream of visual tokens (with a validity mask).

    Every tokenizer can say, before running, how many tokens it emits per image and at what width, so that
    projectors are sized and costs computed without a forward pass.
    """

    @abstractmethod
    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput (+ ObjectMasks) -> TokenStream(tokens (B, N, D), valid (B, N))."""

    def encoder_request(self) -> EncoderRequest:
        """What this tokenizer needs the encoder to compute for it on every call (default: nothing extra)."""
        return EncoderRequest()

    def object_requirements(self, encoder: VisionEncoder) -> ObjectRequirements:
        """What the samples must bring for it (object masks, stored embeddings); default: nothing."""
        return ObjectRequirements()

    # ---- budgets: what a BudgetSchedule may switch between ---------------------------------------------
    def budget_variants(self) -> list[Any]:
        """The budgets a schedule may train this tokenizer with (M3's scales, MQT's query counts); [] for none."""
        return []

    def current_budget(self) -> Any:
        """The budget it runs with now (restored after a training step that switched it)."""
        return None

    def use_budget(self, variant: Any) -> None:
        """Switch to one of ``budget_variants()``."""
        raise NotImplementedError(f"{type(self).__name__} has no budget variants")

    # ---- projection -------------------------------------------------------------------------------------
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


# What a recipe gives for a tokenizer whose weights need the encoder's width: its class and options; the VLM
# calls it with ``encoder.hidden_size``.
TokenizerFactory = Callable[[int], VisualTokenizer]


class BudgetSchedule(L.LightningModule, Checks):
    """Which budget each training step uses. ``training_loss`` runs the step's loss (``loss_at()``, one forward)
    as often as the schedule needs and leaves every tokenizer at the budget it had before."""

    def training_loss(self, loss_at: Callable[[], Tensor], tokenizers: Mapping[str, VisualTokenizer]) -> Tensor:
        """The loss of one training step."""
        return loss_at()


class FixedBudget(BudgetSchedule):
    """Train with the configured budgets, one forward per step."""
