"""Object masks: pure functions for IoU, NMS, selection, background masks and pooling by mask."""

from tokencompose.masks.annotator import ObjectAnnotator
from tokencompose.masks.base import GivenObjects, ObjectSource
from tokencompose.masks.detr_sam import DetrSamProposer
from tokencompose.masks.legrad import legrad
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

__all__ = [
    "DetrSamProposer",
    "GivenObjects",
    "ObjectSource",
    "GroundTruthMasks",
    "MaskInversionSettings",
    "MaskPostprocess",
    "MaskProposer",
    "ObjectAnnotator",
    "SamGridProposer",
    "build_sam",
    "legrad",
    "mask_inversion_direct",
    "mask_inversion_fast",
    "soft_dice_loss",
    "background_mask",
    "greedy_mask_nms",
    "mask_area",
    "mask_iou",
    "masked_average_pool",
    "masks_to_patch_weights",
    "select_top_k",
]
