"""Absolute positional embeddings for inputs of any size.

LeGrad and MaskInversion run CLIP ViTs on images of another size than the checkpoint's (e.g. 448 px for a 224 px
model): the grid part of the positional table is resampled bicubically *with antialiasing* and the class row is
kept, as timm's ``resample_abs_pos_embed(..., num_prefix_tokens=1, interpolation='bicubic', antialias=True)``
which WalBouss/LeGrad ``legrad/utils.py`` (``vit_dynamic_size_forward``) calls. Antialiased bicubic is not
plain bicubic even when upsampling (PyTorch's antialiased kernel is the PIL one), and the maps differ visibly.

The official code overwrites the model's table in place on its first call at a new size, so one wrapper serves
one size; here every call resamples the checkpoint's own table, which equals the official result for any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def resample_grid_positions(
    table: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix: int = 1
) -> Tensor:
    """(P + h*w, C) -> (P + h'*w', C): the grid rows resampled from (h, w) to (h', w'), the P prefix rows kept.

    The table is returned unchanged when the grid is unchanged. Interpolation runs in float32 (bicubic with
    antialiasing needs it) and the result has the table's dtype.
    """
    if tuple(new_grid) == tuple(old_grid):
        return table
    if table.shape[0] != num_prefix + old_grid[0] * old_grid[1]:
        raise ValueError(
            f"resample_grid_positions: table has {table.shape[0]} rows, expected {num_prefix} + "
            f"{old_grid[0]}*{old_grid[1]} for grid {tuple(old_grid)}"
        )
    prefix, grid = table[:num_prefix], table[num_prefix:]
    grid = rearrange(grid.float(), "(h w) c -> 1 c h w", h=old_grid[0])  # (1, C, h, w)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=True)
    grid = rearrange(grid, "1 c h w -> (h w) c").to(table.dtype)  # (h'*w', C)
    return torch.cat([prefix, grid])
