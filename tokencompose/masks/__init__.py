"""Object masks: pure functions for IoU, NMS, selection, background masks and pooling by mask."""

from tokencompose.masks.ops import (
    background_mask,
    greedy_mask_nms,
    mask_area,
    mask_iou,
    masked_average_pool,
    masks_to_patch_weights,
    select_top_k,
)

__all__ = [
    "background_mask",
    "greedy_mask_nms",
    "mask_area",
    "mask_iou",
    "masked_average_pool",
    "masks_to_patch_weights",
    "select_top_k",
]
