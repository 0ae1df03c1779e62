"""Deformable DETR objectness boxes -> SAM box prompts -> one mask per box (Mask-LLaVA's object masks)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from torch import Tensor
from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

from tokencompose.hub import from_pretrained
from tokencompose.masks.proposer import MaskPostprocess, MaskProposer
from tokencompose.masks.sam import build_sam
from tokencompose.model_configs import in_meta_build, published_config
from tokencompose.types import ObjectMasks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cxcywh_to_xyxy(boxes: Tensor, size: int) -> Tensor:
    """(..., 4) normalised centre/size boxes -> pixel corners on a size x size image."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).clamp(0, 1) * size


class DetrSamProposer(MaskProposer):
    """Top-K boxes by objectness (max class probability) from Deformable DETR, turned into masks by SAM.

    Args:
        detector: hub name or local path of a ``DeformableDetrForObjectDetection``; or ``detector_config``
            (a ``DeformableDetrConfig`` dict) for random weights. A class-agnostic checkpoint works as is.
            Inside ``model_configs.meta_build()`` a ``detector`` name builds its shipped configuration on meta.
        sam_variant / sam_checkpoint: a published SAM ('vit_h' + ``sam_vit_h_4b8939.pth``); or ``sam_config``.
        num_boxes: K, boxes kept per image (oversample for training, cut later by the tokenizer).
        detector_size: side the detector sees (the image is resized; DETR was trained around 800).
    """

    def __init__(
        self,
        *,
        detector: str | None = None,
        detector_config: dict[str, Any] | None = None,
        sam_variant: str | None = None,
        sam_checkpoint: str | None = None,
        sam_config: dict[str, Any] | None = None,
        num_boxes: int = 32,
        detector_size: int = 800,
        postprocess: MaskPostprocess | None = None,
    ) -> None:
        super().__init__(postprocess)
        if (detector is None) == (detector_config is None):
            raise ValueError("DetrSamProposer: give exactly one of `detector` (checkpoint) or `detector_config`")
        if detector is not None and not in_meta_build():
            self.detector = from_pretrained("DetrSamProposer (detector)", detector,
                                            DeformableDetrForObjectDetection.from_pretrained)
        else:
            config = detector_config if detector_config is not None else published_config(detector)
            self.detector = DeformableDetrForObjectDetection(DeformableDetrConfig(**config))
        self.sam = build_sam(sam_variant, sam_checkpoint, sam_config)
        self.requires_grad_(False)
        self.num_boxes = num_boxes
        self.detector_size = detector_size
        self.names = (detector or "random-deformable-detr", sam_variant or "random-sam")

    @property
    def description(self) -> str:
        return f"DetrSamProposer(detector={self.names[0]}, sam={self.names[1]}, k={self.num_boxes})"

    @torch.no_grad()
    def boxes(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) in [0, 1] -> boxes (B, K, 4) xyxy pixels, objectness (B, K), best first."""
        size = images.shape[-1]
        pixels = F.interpolate(images, size=self.detector_size, mode="bilinear", antialias=True)
        mean, std = (torch.tensor(v, device=images.device)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
        out = self.detector(pixel_values=(pixels - mean) / std)
        objectness = out.logits.sigmoid().max(dim=-1).values  # (B, Q)
        k = min(self.num_boxes, objectness.shape[1])
        scores, index = objectness.topk(k, dim=1)
        boxes = out.pred_boxes.gather(1, index[..., None].expand(-1, -1, 4))
        return cxcywh_to_xyxy(boxes, size), scores

    @torch.no_grad()
    def propose(self, images: Tensor, given: ObjectMasks | None) -> ObjectMasks:
        boxes, scores = self.boxes(images)
        size = images.shape[-1]
        predictor = SamPredictor(self.sam)
        masks = []
        for image, image_boxes in zip(images, boxes, strict=True):
            resized = predictor.transform.apply_image_torch(image[None] * 255.0)
            predictor.set_torch_image(resized, (size, size))
            prompts = predictor.transform.apply_boxes_torch(image_boxes, (size, size))
            image_masks, _, _ = predictor.predict_torch(None, None, boxes=prompts, multimask_output=False)
            masks.append(image_masks[:, 0])  # (K, S, S): all boxes of the image in one call
        valid = torch.ones_like(scores, dtype=torch.bool)
        return ObjectMasks(masks=torch.stack(masks), scores=scores, valid=valid)
