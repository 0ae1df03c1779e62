"""Learnable-query tokenizers: LLaVA-Mini's compressor and MQT's Matryoshka query transformer.

Both cross-attend from learnable queries to the patch tokens, with fixed 2-D sin-cos positions (MAE's
``get_2d_sincos_pos_embed``) interpolated bicubically to the patch grid. Their weights need the encoder's width,
so it is their first argument ``in_dim``; in a recipe the VLM supplies it, so it is never typed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokencompose.encoders.base import VisionEncoder
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


def sincos_1d(width: int, positions: Tensor) -> Tensor:
    """(P,) positions -> (P, width): sin on the first half, cos on the second (MAE)."""
    omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(width: int, side: int) -> Tensor:
    """(side*side, width) table, MAE's layout: first half from the column index, second from the row."""
    grid_w, grid_h = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="xy")
    return torch.cat([sincos_1d(width // 2, grid_w.flatten()), sincos_1d(width // 2, grid_h.flatten())], dim=1)


def sincos_2d_float16(width: int, side: int) -> Tensor:
    """(side*side, width) float16: MQT-LLaVA's table as released — MAE's formula in numpy float32 (its
    ``Resampler`` builder), then ``.half()``. Computing in float64 instead flips about 1 in 4000 of the float16
    roundings at width 1024, so the arithmetic is numpy's float32, exactly."""

    def axis(half: int, positions: np.ndarray) -> np.ndarray:  # (P,) -> (P, half)
        omega = 1.0 / 10000 ** (np.arange(half // 2, dtype=np.float32) / np.float32(half / 2))
        angles = np.outer(positions, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    cols, rows = np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32))  # (side, side)
    table = np.concatenate([axis(width // 2, cols.ravel()), axis(width // 2, rows.ravel())], axis=1)
    return torch.from_numpy(table).half()


def resize_positions(table: Tensor, side: int, target: tuple[int, int]) -> Tensor:
    """(side*side, D) -> (h*w, D), bicubic (LLaVA-Mini's ``get_abs_pos``)."""
    if (side, side) == target:
        return table
    grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=target, mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(1, 2)[0]


class QueryCompressor(VisualTokenizer):
    """LLaVA-Mini's compressor: C*C learnable queries, one cross-attention over the patch tokens.

    queries = ln_q(Q) + pos_q; keys = ln_kv(X) + pos_kv (the C x C table resized to the grid); values = ln_kv(X).
    With C = 1 the image becomes one token (and the position is a constant). ``in_dim``: the encoder's width
    (the VLM supplies it in a recipe).
    """

    def __init__(self, in_dim: int, side: int = 1, heads: int = 8) -> None:
        super().__init__()
        if side < 1:
            raise ValueError(f"QueryCompressor: side={side}; must be >= 1")
        if in_dim % heads:
            raise ValueError(f"QueryCompressor: heads={heads} must divide the encoder width {in_dim}")
        self.in_dim, self.side, self.heads = in_dim, side, heads
        width = in_dim
        self.queries = nn.Parameter(torch.randn(self.side**2, width) * 0.02)
        self.register_buffer("positions", sincos_2d(width, self.side), persistent=False)
        self.ln_q, self.ln_kv = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, self.heads, batch_first=True)

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput.patches (B, h, w, D) -> TokenStream (B, C*C, D)."""
        patches = features.patches
        x = self.ln_kv(patches.flatten(1, 2))  # (B, h*w, D)
        keys = x + resize_positions(self.positions, self.side, tuple(patches.shape[1:3]))
        queries = (self.ln_q(self.queries) + self.positions).expand(x.shape[0], -1, -1)  # (B, C*C, D)
        tokens, _ = self.attention(queries, keys, x, need_weights=False)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return self.side**2

    def output_width(self, encoder: VisionEncoder) -> int:
        return self.in_dim


class MatryoshkaQueryTransformer(VisualTokenizer):
    """MQT-LLaVA: M learnable queries of which the first m are used (``active``, default all); any m at test
    time, without retraining. Its budgets are {step, 2 step, ..., M}: MQT's training draws one per step
    (``SampledBudget`` as the model's budget schedule).

    As in the official code (gordonhu608/MQT-LLaVA ``Resampler``): keys are the layer-normed *positions* resized
    to the grid, values ln_v(X), queries ln_q(Q[:m] + pos[:m]); LayerNorm eps 1e-6; the sin-cos table is float16
    as released (resized in float32, rounded back to float16, as its ``get_abs_pos``). Its ``proj`` (width ->
    LLM width, no bias) is the model's projector slot: use ``LinearProjector`` with ``bias: false``.
    ``in_dim``: the encoder's width (the VLM supplies it in a recipe).
    """

    def __init__(self, in_dim: int, num_queries: int = 256, heads: int = 16, active: int | None = None,
                 step: int = 2) -> None:
        super().__init__()
        if active is not None and not 1 <= active <= num_queries:
            raise ValueError(f"MatryoshkaQueryTransformer: active={active}; must be in 1..{num_queries}")
        if not 1 <= step <= num_queries:
            raise ValueError(f"MatryoshkaQueryTransformer: step={step}; must be in 1..{num_queries}")
        self.num_queries, self.heads, self.active, self.step = num_queries, heads, active, step
        self.side = math.isqrt(num_queries)
        if self.side**2 != num_queries:
            raise ValueError(f"MatryoshkaQueryTransformer: num_queries={num_queries} must be a square")
        if in_dim % heads:
            raise ValueError(f"MatryoshkaQueryTransformer: heads={heads} must divide the encoder width {in_dim}")
        self.in_dim = width = in_dim
        self.queries = nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(self.num_queries, width), std=0.02))
        self.register_buffer("positions", sincos_2d_float16(width, self.side), persistent=False)
        self.ln_q, self.ln_k, self.ln_v = (nn.LayerNorm(width, eps=1e-6) for _ in range(3))
        self.attention = nn.MultiheadAttention(width, self.heads, batch_first=True)
        # the official ``_init_weights`` reaches the attention's output Linear: trunc-normal 0.02, zero bias
        torch.nn.init.trunc_normal_(self.attention.out_proj.weight, std=0.02)
        torch.nn.init.zeros_(self.attention.out_proj.bias)

    def budget_variants(self) -> list[int]:
        return list(range(self.step, self.num_queries + 1, self.step))

    def current_budget(self) -> int | None:
        return self.active

    def use_budget(self, variant: int | None) -> None:
        self.active = variant

    def count(self) -> int:
        """Queries used now: ``active`` (default all)."""
        return self.active or self.num_queries

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput.patches (B, h, w, D) -> TokenStream (B, m, D)."""
        patches = features.patches
        m = self.count()
        values = self.ln_v(patches.flatten(1, 2))  # (B, h*w, D)
        grid = resize_positions(self.positions.float(), self.side, tuple(patches.shape[1:3]))
        keys = self.ln_k(grid.to(self.positions.dtype).to(values.dtype)).expand_as(values)  # (B, h*w, D)
        queries = self.ln_q(self.queries[:m] + self.positions[:m].to(self.queries.dtype))  # (m, D)
        tokens, _ = self.attention(queries.expand(values.shape[0], -1, -1), keys, values, need_weights=False)
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return self.num_queries if training else self.count()

    def output_width(self, encoder: VisionEncoder) -> int:
        return self.in_dim
