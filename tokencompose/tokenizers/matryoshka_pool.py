"""M3 (Matryoshka Multimodal Models): nested average pooling of the patch grid to one of several scales."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from tokencompose.encoders.base import VisionEncoder
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


class MatryoshkaPoolTokenizer(VisualTokenizer):
    """Average pooling (kernel = stride = grid / side) to ``scale`` tokens, a square among ``scales``.

    In training the model averages the LM loss over every scale (one forward each, as M3 does); at test time
    ``scale`` picks one. M3 pools after the projector; here the pooling is before it, which is the same at
    the full scale (no pooling) and keeps every tokenizer's output in the encoder's width.
    """

    def __init__(self, scales: tuple[int, ...] = (1, 9, 36, 144, 576), scale: int | None = None) -> None:
        super().__init__()
        bad = [s for s in scales if math.isqrt(s) ** 2 != s]
        if bad:
            raise ValueError(f"MatryoshkaPoolTokenizer: scales {bad} are not squares")
        self.scales = tuple(sorted(scales))
        self.scale = scale if scale is not None else self.scales[-1]
        if self.scale not in self.scales:
            raise ValueError(f"MatryoshkaPoolTokenizer: scale={self.scale}; allowed: {list(self.scales)}")

    def budget_variants(self) -> list[int]:
        return list(self.scales)

    def use_budget(self, variant: int) -> None:
        self.scale = variant

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput.patches (B, h, w, D) -> TokenStream (B, scale, D)."""
        patches = features.patches
        side = math.isqrt(self.scale)
        if patches.shape[1] % side or patches.shape[2] % side:
            raise ValueError(f"MatryoshkaPoolTokenizer: a {patches.shape[1]}x{patches.shape[2]} grid cannot pool to {side}x{side}")
        kernel = patches.shape[1] // side
        pooled = F.avg_pool2d(rearrange(patches, "b h w d -> b d h w"), kernel_size=kernel, stride=kernel)
        tokens = rearrange(pooled, "b d h w -> b (h w) d")  # (B, side*side, D)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder) -> int:
        return self.scales[-1] if self.training else self.scale

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size
