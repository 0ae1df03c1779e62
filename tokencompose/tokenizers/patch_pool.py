"""Patch tokens pooled to a g x g grid (g=None keeps every patch, as LLaVA-1.5 does)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

from tokencompose.encoders.base import VisionEncoder
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


class PatchPoolTokenizer(VisualTokenizer):
    """Adaptive average/max pooling of the patch grid.

    Args:
        grid: side g of the pooled grid (g*g tokens); None keeps all h*w patches. A plain attribute, so it
            can be changed at test time (``--model.tokenizers.patch.grid 2``) without retraining.
        mode: ``"avg"`` or ``"max"`` pooling.
    """

    def __init__(self, grid: int | None = None, mode: Literal["avg", "max"] = "avg") -> None:
        super().__init__()
        if grid is not None and grid < 1:
            raise ValueError(f"PatchPoolTokenizer: grid={grid}; must be a positive int or None")
        if mode not in ("avg", "max"):
            raise ValueError(f"PatchPoolTokenizer: mode={mode!r}; allowed: 'avg', 'max'")
        self.grid = grid
        self.mode = mode

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput.patches (B, h, w, D) -> TokenStream(tokens (B, g*g, D), valid (B, g*g))."""
        patches = features.patches
        if self.grid is not None and self.grid != patches.shape[1]:
            grid = rearrange(patches, "b h w d -> b d h w")
            pool = F.adaptive_avg_pool2d if self.mode == "avg" else F.adaptive_max_pool2d
            patches = rearrange(pool(grid, self.grid), "b d h w -> b h w d")  # (B, g, g, D)
        tokens = patches.flatten(1, 2)  # (B, g*g, D), raster order
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        side = encoder.grid_size if self.grid is None else self.grid
        return side * side

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size
