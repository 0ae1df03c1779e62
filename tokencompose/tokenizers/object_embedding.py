"""How an object tokenizer turns one mask into one embedding (pluggable; MaskInversion plugs in here too)."""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.ops import masked_average_pool
from tokencompose.types import EncoderOutput


class ObjectEmbedding(L.LightningModule):
    """One embedding per mask."""

    @abstractmethod
    def forward(self, features: EncoderOutput, masks: Tensor) -> tuple[Tensor, Tensor]:
        """EncoderOutput, masks (B, K, H, W) bool -> embeddings (B, K, D), usable (B, K) bool."""

    @abstractmethod
    def output_width(self, encoder: VisionEncoder) -> int:
        """The width D of the embeddings for this encoder."""


class MaskedPoolEmbedding(ObjectEmbedding):
    """Masked average pooling of the patch tokens, each patch weighted by the fraction of it the mask covers."""

    def forward(self, features: EncoderOutput, masks: Tensor) -> tuple[Tensor, Tensor]:
        """EncoderOutput.patches (B, h, w, Dv), masks (B, K, H, W) -> (B, K, Dv), nonempty (B, K)."""
        return masked_average_pool(features.patches, masks)

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size
