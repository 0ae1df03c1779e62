"""How an object tokenizer turns one mask into one embedding (pluggable; MaskInversion plugs in here too)."""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.ops import masked_average_pool
from tokencompose.types import EncoderOutput, EncoderRequest


class ObjectEmbedding(L.LightningModule):
    """One embedding per mask."""

    #: whether any mask can be embedded from the features alone (False: embeddings must come precomputed)
    embeds_from_masks: bool = True

    @abstractmethod
    def forward(self, features: EncoderOutput, masks: Tensor, stored: Tensor | None) -> tuple[Tensor, Tensor]:
        """EncoderOutput, masks (B, K, H, W) bool, precomputed embeddings (B, K, De) or None
        -> embeddings (B, K, D), usable (B, K) bool."""

    def encoder_request(self) -> EncoderRequest:
        """What this embedding needs the encoder to compute on every call (default: nothing extra)."""
        return EncoderRequest()

    @abstractmethod
    def output_width(self, encoder: VisionEncoder) -> int:
        """The width D of the embeddings for this encoder."""


class MaskedPoolEmbedding(ObjectEmbedding):
    """Masked average pooling of the patch tokens, each patch weighted by the fraction of it the mask covers."""

    def forward(self, features: EncoderOutput, masks: Tensor, stored: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """EncoderOutput.patches (B, h, w, Dv), masks (B, K, H, W) -> (B, K, Dv), nonempty (B, K)."""
        return masked_average_pool(features.patches, masks)

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size


class MaskInversionEmbedding(ObjectEmbedding):
    """MaskInversion embeddings that come with the objects (from the annotate job, or an online annotator).

    They live in the projected CLIP space (width De). With ``to_patch_width`` they are mapped into the patch
    tokens' width Dv by the pseudo-inverse of the encoder's final projection, so CLS, patch and object tokens
    can share one projector; otherwise give them their own projector (``shared_projector: false``).
    """

    embeds_from_masks = False

    def __init__(self, to_patch_width: bool = False) -> None:
        super().__init__()
        self.to_patch_width = to_patch_width

    def encoder_request(self) -> EncoderRequest:
        return EncoderRequest(inverse_projection=self.to_patch_width)

    def forward(self, features: EncoderOutput, masks: Tensor, stored: Tensor | None) -> tuple[Tensor, Tensor]:
        """stored (B, K, De) -> (B, K, De), or (B, K, Dv) with ``to_patch_width``; usable where the mask is nonempty."""
        if stored is None:
            raise ValueError(
                "MaskInversionEmbedding needs object embeddings with the batch: read shards written by "
                "`tokencompose annotate`, or give the model an online `object_source` (ObjectAnnotator)"
            )
        embeddings = stored.to(features.patches.dtype)
        if self.to_patch_width:
            embeddings = embeddings @ features.inverse_projection.to(embeddings.dtype)  # (B, K, Dv)
        return embeddings, masks.flatten(2).any(-1)

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size if self.to_patch_width else encoder.embed_dim
