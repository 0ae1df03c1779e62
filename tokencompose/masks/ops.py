"""Pure tensor functions on object masks: area, IoU, greedy NMS, selection, background, pooling onto a patch grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_area(masks: Tensor) -> Tensor:
    """(..., H, W) bool -> (...) float pixel counts."""
    return masks.flatten(-2).float().sum(-1)


def mask_iou(masks: Tensor) -> Tensor:
    """Pairwise IoU of the masks of each image: (B, K, H, W) bool -> (B, K, K) float (0 where both are empty)."""
    flat = masks.flatten(-2).float()  # (B, K, H*W)
    inter = flat @ flat.transpose(1, 2)  # (B, K, K)
    area = flat.sum(-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / union.clamp(min=1.0)


def greedy_mask_nms(masks: Tensor, order_scores: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS by mask IoU, highest ``order_scores`` first, independently per image.

    (B, K, H, W) bool, (B, K) float, (B, K) bool -> keep (B, K) bool. A mask is dropped when its IoU with an
    already kept mask is above ``iou_threshold``.
    """
    batch, num = order_scores.shape
    iou = mask_iou(masks)
    order = order_scores.masked_fill(~valid, float("-inf")).argsort(dim=1, descending=True)  # (B, K)
    rows = torch.arange(batch, device=masks.device)
    keep = torch.zeros_like(valid)
    for rank in range(num):  # K is small (tens); each step is vectorised over the batch
        idx = order[:, rank]  # (B,)
        overlaps = (iou[rows, idx] > iou_threshold) & keep  # (B, K): kept masks this one overlaps
        keep[rows, idx] = valid[rows, idx] & ~overlaps.any(dim=1)
    return keep


def select_top_k(order_scores: Tensor, keep: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices of the ``k`` highest-scoring kept entries per row, best first.

    (B, K) float, (B, K) bool -> index (B, k) long, valid (B, k) bool. Rows with fewer than ``k`` kept
    entries are padded with index 0 and valid False.
    """
    batch, num = order_scores.shape
    if num < k:  # pad so that topk always has k columns
        order_scores = F.pad(order_scores, (0, k - num), value=float("-inf"))
        keep = F.pad(keep, (0, k - num), value=False)
    ranked = order_scores.masked_fill(~keep, float("-inf"))
    top_scores, index = ranked.topk(k, dim=1)
    valid = top_scores > float("-inf")
    return index.masked_fill(~valid, 0), valid


def background_mask(masks: Tensor, valid: Tensor) -> Tensor:
    """Complement of the union of the valid masks: (B, K, H, W) bool, (B, K) bool -> (B, H, W) bool."""
    union = (masks & valid[:, :, None, None]).any(dim=1)
    return ~union


def masks_to_patch_weights(masks: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Fraction of each patch a mask covers: (B, K, H, W) bool -> (B, K, h, w) float in [0, 1]."""
    batch, num, height, width = masks.shape
    flat = masks.reshape(batch * num, 1, height, width).float()
    weights = F.adaptive_avg_pool2d(flat, grid_size)  # exact area fractions when H, W are multiples of h, w
    return weights.reshape(batch, num, *grid_size)


def masked_average_pool(patches: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Average of the patch tokens under each mask, weighted by patch coverage.

    (B, h, w, D), (B, K, H, W) bool -> tokens (B, K, D), nonempty (B, K) bool. An empty mask gives a zero
    token and ``nonempty`` False.
    """
    weights = masks_to_patch_weights(masks, tuple(patches.shape[1:3])).flatten(2)  # (B, K, h*w)
    total = weights.sum(-1, keepdim=True)  # (B, K, 1)
    tokens = weights @ patches.flatten(1, 2) / total.clamp(min=1e-6)  # (B, K, D)
    return tokens, total.squeeze(-1) > 0
