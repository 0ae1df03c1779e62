"""Object masks: pure functions for IoU, NMS, selection, background masks and pooling by mask."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

# `legrad` is also the name of its submodule: imported at once, so that submodule never shadows the function
from tokencompose.masks.legrad import legrad

if TYPE_CHECKING:
    from tokencompose.masks.annotator import ObjectAnnotator
    from tokencompose.masks.base import GivenObjects, ObjectSource
    from tokencompose.masks.detr_sam import DetrSamProposer
    from tokencompose.masks.mask_inversion import (
        MaskInversionSettings,
        mask_inversion_direct,
        mask_inversion_fast,
        soft_dice_loss,
    )
    from tokencompose.masks.ops import (
        background_mask,
        greedy_mask_nms,
        mask_area,
        mask_iou,
        masked_average_pool,
        masks_to_patch_weights,
        select_top_k,
    )
    from tokencompose.masks.proposer import GroundTruthMasks, MaskPostprocess, MaskProposer
    from tokencompose.masks.sam import build_sam
    from tokencompose.masks.sam_grid import SamGridProposer

EXPORTS = {
    "ObjectAnnotator": "annotator",
    "GivenObjects": "base",
    "ObjectSource": "base",
    "DetrSamProposer": "detr_sam",
    "MaskInversionSettings": "mask_inversion",
    "mask_inversion_direct": "mask_inversion",
    "mask_inversion_fast": "mask_inversion",
    "soft_dice_loss": "mask_inversion",
    "background_mask": "ops",
    "greedy_mask_nms": "ops",
    "mask_area": "ops",
    "mask_iou": "ops",
    "masked_average_pool": "ops",
    "masks_to_patch_weights": "ops",
    "select_top_k": "ops",
    "GroundTruthMasks": "proposer",
    "MaskPostprocess": "proposer",
    "MaskProposer": "proposer",
    "build_sam": "sam",
    "SamGridProposer": "sam_grid",
}
__all__ = [
    "DetrSamProposer",
    "GivenObjects",
    "GroundTruthMasks",
    "MaskInversionSettings",
    "MaskPostprocess",
    "MaskProposer",
    "ObjectAnnotator",
    "ObjectSource",
    "SamGridProposer",
    "background_mask",
    "build_sam",
    "greedy_mask_nms",
    "legrad",
    "mask_area",
    "mask_inversion_direct",
    "mask_inversion_fast",
    "mask_iou",
    "masked_average_pool",
    "masks_to_patch_weights",
    "select_top_k",
    "soft_dice_loss",
]
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
