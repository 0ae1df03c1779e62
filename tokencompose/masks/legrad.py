"""LeGrad explainability maps for CLIP ViTs (WalBouss/LeGrad, ``LeWrapper.compute_legrad_clip``), as pure functions.

For each of the last ``num_layers`` blocks l: the block output is averaged over *all* tokens, passed through
the final norm and projection and L2-normalised (z_l); the score s_l = <e, z_l>; the map is ReLU(ds_l/dA_l)
averaged over heads and query rows, CLS key column dropped, upsampled bilinearly by the patch size. Maps are
summed over layers and min-max normalised per map (no epsilon).

Any input size works (also H != W): the grid is the input's, (h, w) = (H // patch, W // patch), and the encoder
resamples its positional embedding with antialiased bicubic, as the official ``vit_dynamic_size_forward``. (The
official map reshape assumes a square grid, h = w = sqrt(N); ours reshapes to (h, w), equal when square.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokencompose.encoders.base import BlockTrace, VisionEncoder


def relevance_from_attention_grad(grad: Tensor) -> Tensor:
    """(..., H, T, T) gradient w.r.t. post-softmax attention -> (..., T - 1) patch relevance."""
    return grad.clamp(min=0).mean(dim=-3).mean(dim=-2)[..., 1:]


def combine_layer_maps(relevances: list[Tensor], grid: tuple[int, int], patch: int) -> Tensor:
    """Per-layer relevances (..., h*w) -> (..., h*patch, w*patch) maps: upsample each, sum, min-max per map."""
    lead = relevances[0].shape[:-1]
    total = 0
    for relevance in relevances:
        spatial = relevance.reshape(-1, 1, *grid)  # (M, 1, h, w), raster order as the patch tokens
        total = total + F.interpolate(spatial, scale_factor=patch, mode="bilinear")
    flat = total.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    maps = (flat - low) / (high - low)
    return maps.reshape(*lead, grid[0] * patch, grid[1] * patch)


def layer_embedding(encoder: VisionEncoder, output: Tensor) -> Tensor:
    """Block output (B, T, C) -> (B, De) normalised embedding of the mean over all tokens."""
    return F.normalize(encoder.project_pooled(output.mean(dim=1)), dim=-1)


def trace_last_blocks(encoder: VisionEncoder, pixels: Tensor, num_layers: int) -> list[BlockTrace]:
    """Run the last ``num_layers`` blocks explicitly on (B, 3, H, W) images; earlier blocks without a graph."""
    start = encoder.num_blocks - num_layers
    with torch.no_grad():
        x = encoder.block_input(pixels, start)
    x.requires_grad_(True)  # puts the attention into the graph even for a frozen encoder
    traces = []
    for block in range(start, encoder.num_blocks):
        trace = encoder.trace_block(block, x)
        traces.append(trace)
        x = trace.output
    return traces


def legrad_from_traces(
    encoder: VisionEncoder, traces: list[BlockTrace], embeddings: Tensor, grid: tuple[int, int], create_graph: bool
) -> Tensor:
    """Maps for embeddings (B, De), one per traced image (B images on an (h, w) grid) -> (B, h*p, w*p)."""
    relevances = []
    for trace in traces:
        score = (embeddings * layer_embedding(encoder, trace.output)).sum()
        (grad,) = torch.autograd.grad(score, trace.attention, retain_graph=True, create_graph=create_graph)
        relevances.append(relevance_from_attention_grad(grad))
    return combine_layer_maps(relevances, grid, encoder.patch_size)


def legrad(encoder: VisionEncoder, pixels: Tensor, embeddings: Tensor, num_layers: int = 2) -> Tensor:
    """LeGrad map of each embedding over its image.

    pixels (K, 3, H, W), any size — image k goes with embedding k (repeat an image for several embeddings);
    embeddings (K, De), normalised inside. Returns (K, h*p, w*p) in [0, 1], (h, w) = ``encoder.grid_of(pixels)``
    (the input size when it is a multiple of the patch size).
    """
    grid = encoder.grid_of(pixels)
    with torch.enable_grad():
        traces = trace_last_blocks(encoder, pixels, num_layers)
        return legrad_from_traces(encoder, traces, F.normalize(embeddings, dim=-1), grid, create_graph=False).detach()
