"""M3 (Matryoshka Multimodal Models): nested average pooling of the projected patch grid to one of several scales."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tokencompose.encoders.base import VisionEncoder
from tokencompose.parts import Parts
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


def nested_avg_pool(tokens: Tensor, scale: int) -> Tensor:
    """Raster-order tokens of a square grid (B, h*h, D) -> (B, scale, D), raster order.

    Average pooling with kernel = stride = h / sqrt(scale), as M3's ``matryoshka_vis_token_process``.
    """
    side, grid = math.isqrt(scale), math.isqrt(tokens.shape[1])
    if grid * grid != tokens.shape[1] or side * side != scale or grid % side:
        raise ValueError(f"nested_avg_pool: {tokens.shape[1]} tokens (a {grid}x{grid} grid?) cannot pool to {scale}")
    kernel = grid // side
    pooled = F.avg_pool2d(rearrange(tokens, "b (h w) d -> b d h w", h=grid), kernel_size=kernel, stride=kernel)
    return rearrange(pooled, "b d h w -> b (h w) d")  # (B, side*side, D)


class MatryoshkaPoolTokenizer(VisualTokenizer):
    """Average pooling (kernel = stride = grid / side) to ``scale`` tokens, a square among ``scales``.

    M3's training averages the LM loss over every scale (one forward each: ``AverageOverBudgets`` as the model's
    budget schedule); at test time ``scale`` picks one. As in M3 (mu-cai/matryoshka-mm ``encode_images`` then ``matryoshka_vis_token_process``)
    the projector runs on every patch and the pooling comes after it: ``forward`` emits all h*w patches and
    ``project`` pools the projected grid. The scaler, if any, therefore sees all patches.

    ``pool_before_projector=True`` pools the encoder's patches instead (the order this project used before);
    it equals M3 only at the full scale or with a linear projector.
    """

    def __init__(
        self, scales: tuple[int, ...] = (1, 9, 36, 144, 576), scale: int | None = None,
        pool_before_projector: bool = False,
    ) -> None:
        super().__init__()
        bad = [s for s in scales if math.isqrt(s) ** 2 != s]
        if bad:
            raise ValueError(f"MatryoshkaPoolTokenizer: scales {bad} are not squares")
        self.scales = tuple(sorted(scales))
        self.scale = scale if scale is not None else self.scales[-1]
        if self.scale not in self.scales:
            raise ValueError(f"MatryoshkaPoolTokenizer: scale={self.scale}; allowed: {list(self.scales)}")
        self.pool_before_projector = pool_before_projector

    def problems(self, parts: Parts) -> list[str]:
        grid = parts.encoder.grid_size
        bad = [s for s in self.scales if grid % math.isqrt(s)]
        return [f"scales {bad} do not divide the encoder's {grid}x{grid} grid"] if bad else []

    def budget_variants(self) -> list[int]:
        return list(self.scales)

    def current_budget(self) -> int:
        return self.scale

    def use_budget(self, variant: int) -> None:
        self.scale = variant

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput.patches (B, h, h, D) -> TokenStream (B, h*h, D), or (B, scale, D) when pooling first."""
        patches = features.patches
        if patches.shape[1] != patches.shape[2]:
            raise ValueError(f"MatryoshkaPoolTokenizer: needs a square patch grid, got {patches.shape[1]}x{patches.shape[2]}")
        tokens = patches.flatten(1, 2)  # (B, h*h, D), raster order
        if self.pool_before_projector:
            tokens = nested_avg_pool(tokens, self.scale)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    @property
    def reduces_after_projection(self) -> bool:
        return not self.pool_before_projector

    def project(self, stream: TokenStream, projector: nn.Module) -> TokenStream:
        """TokenStream (B, h*h, D) -> (B, scale, D_llm): every patch projected, then pooled (M3's order)."""
        if self.pool_before_projector:
            return super().project(stream, projector)
        tokens = nested_avg_pool(projector(stream.tokens), self.scale)  # (B, scale, D_llm)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return self.scales[-1] if training else self.scale

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size
