"""SAM's automatic mask generator (a grid of point prompts) as a proposer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from torch import Tensor

from tokencompose.masks.proposer import MaskPostprocess, MaskProposer
from tokencompose.masks.sam import build_sam
from tokencompose.types import ObjectMasks


class SamGridProposer(MaskProposer):
    """Masks from a points_per_side x points_per_side prompt grid, scored by SAM's predicted IoU."""

    def __init__(
        self,
        *,
        sam_variant: str | None = None,
        sam_checkpoint: str | None = None,
        sam_config: dict[str, Any] | None = None,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        max_masks: int = 64,
        postprocess: MaskPostprocess | None = None,
    ) -> None:
        super().__init__(postprocess)
        self.sam = build_sam(sam_variant, sam_checkpoint, sam_config)
        self.requires_grad_(False)
        self.generator_options = dict(
            points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
        )
        self.max_masks = max_masks

    @torch.no_grad()
    def propose(self, images: Tensor, given: ObjectMasks | None) -> ObjectMasks:
        generator = SamAutomaticMaskGenerator(self.sam, **self.generator_options)
        size = images.shape[-1]
        batch = images.shape[0]
        masks = torch.zeros(batch, self.max_masks, size, size, dtype=torch.bool, device=images.device)
        scores = torch.zeros(batch, self.max_masks, device=images.device)
        for b, image in enumerate(images):
            array = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            found = sorted(generator.generate(np.ascontiguousarray(array)), key=lambda m: -m["predicted_iou"])
            for k, record in enumerate(found[: self.max_masks]):
                masks[b, k] = torch.from_numpy(record["segmentation"])
                scores[b, k] = float(record["predicted_iou"])
        return ObjectMasks(masks=masks, scores=scores, valid=masks.flatten(2).any(-1))
