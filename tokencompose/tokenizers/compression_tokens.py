"""Learned compression tokens (VoCo-LLaMA's ``<voco>``): placed after the image, they are all that the text
after them can see of it when the model hides the image behind them (``HideBehindStream``, the attention policy)."""

from __future__ import annotations

import torch
from torch import nn

from tokencompose.encoders.base import VisionEncoder
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


class CompressionTokens(VisualTokenizer):
    """``count`` learned tokens, the same for every image (their content comes from attending to the image).
    ``in_dim``: the encoder's width (the VLM supplies it in a recipe)."""

    def __init__(self, in_dim: int, count: int = 1) -> None:
        super().__init__()
        if count < 1:
            raise ValueError(f"CompressionTokens: count={count}; must be >= 1")
        self.in_dim, self.count = in_dim, count
        self.tokens = nn.Parameter(torch.randn(count, in_dim) * 0.02)

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput (B images) -> TokenStream (B, count, Dv)."""
        batch = features.patches.shape[0]
        tokens = self.tokens.to(features.patches.dtype).expand(batch, -1, -1)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return self.count

    def output_width(self, encoder: VisionEncoder) -> int:
        return self.in_dim
