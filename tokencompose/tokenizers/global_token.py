"""One global token per image: the CLS token or the projected image embedding."""

from __future__ import annotations

from typing import Literal

import torch

from tokencompose.encoders.base import VisionEncoder
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


class GlobalTokenizer(VisualTokenizer):
    """The image's global token.

    Args:
        source: ``"cls"`` — the CLS token of the encoder's selected layer (width Dv, LLaVA's ``cls_patch``);
            ``"embedding"`` — the final projected CLIP embedding (width De, the space object embeddings
            from MaskInversion live in).
    """

    def __init__(self, source: Literal["cls", "embedding"] = "cls") -> None:
        super().__init__()
        if source not in ("cls", "embedding"):
            raise ValueError(f"GlobalTokenizer: source={source!r}; allowed: 'cls', 'embedding'")
        self.source = source

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput -> TokenStream(tokens (B, 1, Dv or De), valid (B, 1))."""
        token = features.cls if self.source == "cls" else features.embedding
        tokens = token[:, None]  # (B, 1, D)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return 1

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size if self.source == "cls" else encoder.embed_dim
