"""Pure functions shared by the decoding policies that drop visual tokens inside the LLM (FastV, FitPrune).

A batch keeps one length: each row drops its own tokens (as it would alone), and ``compact`` removes as many
positions from every row as the row that drops fewest, leaving a row's further drops in place, masked out — so a
row's result never depends on the other rows of its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def lowest_visual(score: Tensor, visual: Tensor, count: int | Tensor) -> Tensor:
    """score (B, L), visual (B, L) bool, count int or (B, 1) per row -> (B, L) bool: each row's
    min(count, n_visual) lowest-scoring visual positions (ties: the earlier position first)."""
    ranked = score.masked_fill(~visual, torch.inf)
    order = ranked.argsort(dim=1, stable=True)  # (B, L) ascending: visual positions first
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank < visual.sum(1, keepdim=True).clamp(max=count)


def compact(dropped: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """dropped, valid (B, L) bool -> (kept positions (B, L'), their validity (B, L')). Every row gives up as many
    positions as the row that drops fewest; what a row drops beyond that stays in place, masked out."""
    batch, length = dropped.shape
    common = int(dropped.sum(1).min())
    removed = dropped & (dropped.cumsum(1) <= common)  # (B, L): exactly `common` per row
    positions = torch.arange(length, device=dropped.device).expand(batch, length)
    keep = positions[~removed].view(batch, length - common)  # row-major: each row's kept positions in order
    return keep, (valid & ~dropped).gather(1, keep)
