"""MaskInversion (WalBouss/MaskInversion): one CLIP embedding per mask whose LeGrad map matches the mask.

Each embedding starts at the image's (unnormalised) embedding; every step normalises it, computes its LeGrad
map, resizes the map bilinearly to the mask, and takes an AdamW step on soft-Dice (smooth 1) +
alpha * (1 - cos to the image embedding). The raw (unnormalised) embedding is returned, with the map of the last
step (computed before the final optimiser step), as the official code does.

Two forms, equal up to floating point:
- ``mask_inversion_direct``: as published — the image is replicated once per mask through the encoder, and
  each step differentiates through ``autograd.grad(create_graph=True)`` of the score w.r.t. the attention.
- ``mask_inversion_fast``: one encoder forward per image for all its masks, all images of a batch together.
  For a fixed image, ds/dA = (ds/dcontext) V^T and ds/dcontext is linear in the embedding: a VJP of the
  fixed map context -> z. Its closure is built once per image and layer and applied to every mask's
  embedding with ``vmap`` each step; no image copies, no second encoder pass.

Both take images of any size (also H != W); the encoder resamples its positional embedding (antialiased bicubic,
as the official code) and the maps are computed on the input's grid before being resized to the masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.legrad import (
    combine_layer_maps,
    legrad_from_traces,
    relevance_from_attention_grad,
    trace_last_blocks,
)


@dataclass
class MaskInversionSettings:
    """Defaults from the official code's README/example: 10 AdamW steps at lr 0.5, alpha 0, last block only."""

    iterations: int = 10
    lr: float = 0.5
    alpha: float = 0.0
    weight_decay: float = 0.0
    num_layers: int = 1


def soft_dice_loss(maps: Tensor, masks: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - (2 sum(E M) + s) / (sum E + sum M + s) per map: (..., H, W), (..., H, W) -> (...)."""
    inter = (maps * masks).flatten(-2).sum(-1)
    return 1 - (2 * inter + smooth) / (maps.flatten(-2).sum(-1) + masks.flatten(-2).sum(-1) + smooth)


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., h, w) -> (..., H, W) bilinear."""
    lead = maps.shape[:-2]
    return F.interpolate(maps.reshape(-1, 1, *maps.shape[-2:]), size=size, mode="bilinear").reshape(*lead, *size)


def _cosine_pull(image_embedding: Tensor, normalised: Tensor) -> Tensor:
    return 1 - (F.normalize(image_embedding, dim=-1) * normalised).sum(-1)


def mask_inversion_direct(
    encoder: VisionEncoder, image: Tensor, masks: Tensor, settings: MaskInversionSettings | None = None
) -> tuple[Tensor, Tensor]:
    """The published form. image (1, 3, H, W); masks (K, Hm, Wm) in [0, 1] -> embeddings (K, De), maps (K, Hm, Wm)."""
    settings = settings or MaskInversionSettings()
    count = masks.shape[0]
    grid = encoder.grid_of(image)
    with torch.enable_grad():
        copies = image.expand(count, -1, -1, -1)  # one image copy per mask
        traces = trace_last_blocks(encoder, copies, settings.num_layers)
        image_embedding = encoder.project_pooled(traces[-1].output[:, 0]).detach()  # (K, De)
        embedding = image_embedding.clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([embedding], lr=settings.lr, weight_decay=settings.weight_decay)
        for _ in range(settings.iterations):
            normalised = F.normalize(embedding, dim=-1)
            maps = _resize(legrad_from_traces(encoder, traces, normalised, grid, create_graph=True), masks.shape[-2:])
            loss = soft_dice_loss(maps, masks).mean() + settings.alpha * _cosine_pull(image_embedding, normalised).mean()
            optimizer.zero_grad()
            loss.backward(retain_graph=True)
            optimizer.step()
    return embedding.detach(), maps.detach()


@dataclass
class _FastLayer:
    context_vjp: object  # vjp closure of context (B, H, T, c) -> z (B, De)
    values: Tensor  # (B, H, T, c)


def _prepare_fast(encoder: VisionEncoder, images: Tensor, num_layers: int) -> tuple[list[_FastLayer], Tensor]:
    start = encoder.num_blocks - num_layers
    layers = []
    with torch.no_grad():
        x = encoder.block_input(images, start)
    for block in range(start, encoder.num_blocks):
        with torch.no_grad():
            queries, keys, values, scale = encoder.attention_inputs(block, x)
            context = torch.softmax((queries @ keys.transpose(-1, -2)) * scale, dim=-1) @ values

        def to_embedding(ctx: Tensor, block: int = block, x: Tensor = x) -> Tensor:
            pooled = encoder.pooled_block_output(block, x, ctx)  # (B, C)
            return F.normalize(encoder.project_pooled(pooled), dim=-1)

        _, vjp = torch.func.vjp(to_embedding, context)
        layers.append(_FastLayer(vjp, values))
        with torch.no_grad():
            x = encoder.finish_block(block, x, context)
    with torch.no_grad():
        image_embedding = encoder.project_pooled(x[:, 0])
    return layers, image_embedding


def _fast_maps(encoder: VisionEncoder, layers: list[_FastLayer], normalised: Tensor, grid: tuple[int, int]) -> Tensor:
    """normalised embeddings (B, K, De), images on an (h, w) grid -> maps (B, K, h*p, w*p)."""
    relevances = []
    for layer in layers:
        grad_context = torch.func.vmap(lambda e, f=layer.context_vjp: f(e)[0], in_dims=1, out_dims=1)(normalised)
        grad_attention = grad_context @ layer.values[:, None].transpose(-1, -2)  # (B, K, H, T, T)
        relevances.append(relevance_from_attention_grad(grad_attention))
    return combine_layer_maps(relevances, grid, encoder.patch_size)


def mask_inversion_fast(
    encoder: VisionEncoder,
    images: Tensor,
    masks: Tensor,
    valid: Tensor | None = None,
    settings: MaskInversionSettings | None = None,
) -> tuple[Tensor, Tensor]:
    """All masks of all images together. images (B, 3, H, W); masks (B, K, Hm, Wm) in [0, 1]; valid (B, K)
    -> embeddings (B, K, De), maps (B, K, Hm, Wm). Invalid (padding) masks are not optimised towards anything.

    The loss is the sum over images of each image's mean over its masks, so every mask's update equals the
    published form's for that image alone.
    """
    settings = settings or MaskInversionSettings()
    valid = torch.ones(masks.shape[:2], dtype=torch.bool, device=masks.device) if valid is None else valid
    weight = valid.float() / valid.sum(1, keepdim=True).clamp(min=1)  # (B, K): 1 / K_b on valid masks
    grid = encoder.grid_of(images)
    with torch.enable_grad():
        layers, image_embedding = _prepare_fast(encoder, images, settings.num_layers)
        image_embedding = image_embedding[:, None].expand(-1, masks.shape[1], -1)  # (B, K, De)
        embedding = image_embedding.clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([embedding], lr=settings.lr, weight_decay=settings.weight_decay)
        for _ in range(settings.iterations):
            normalised = F.normalize(embedding, dim=-1)
            maps = _resize(_fast_maps(encoder, layers, normalised, grid), masks.shape[-2:])
            per_mask = soft_dice_loss(maps, masks) + settings.alpha * _cosine_pull(image_embedding, normalised)
            loss = (per_mask * weight).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return embedding.detach(), maps.detach()
