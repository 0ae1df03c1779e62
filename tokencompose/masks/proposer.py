"""The mask-proposer interface and the post-processing every proposer shares."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor

from tokencompose.masks.ops import background_mask, greedy_mask_nms, mask_area
from tokencompose.types import ObjectMasks


@dataclass
class MaskPostprocess:
    """Shared clean-up of proposals.

    min_area: drop masks with fewer pixels. iou_threshold: greedy mask NMS by score (None: off).
    background: append the complement of the kept masks' union as one more mask, with score 0 (ranked last).
    """

    min_area: int = 0
    iou_threshold: float | None = None
    background: bool = False

    def __call__(self, objects: ObjectMasks) -> ObjectMasks:
        masks = objects.masks.bool()
        valid = objects.valid & (mask_area(masks) >= max(self.min_area, 1))
        if self.iou_threshold is not None:
            valid = greedy_mask_nms(masks, objects.scores, valid, self.iou_threshold)
        scores = objects.scores
        if self.background:
            rest = background_mask(masks, valid)[:, None]  # (B, 1, H, W)
            masks = torch.cat([masks, rest], dim=1)
            scores = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)
            valid = torch.cat([valid, rest.flatten(2).any(-1)], dim=1)
        return ObjectMasks(masks=masks & valid[:, :, None, None], scores=scores * valid, valid=valid)


class MaskProposer(L.LightningModule):
    """Images -> object masks on the same (padded-square) image.

    forward: images (B, 3, S, S) float in [0, 1] (+ masks that came with them) -> ObjectMasks (B, K, S, S).
    """

    #: whether it reads the masks that come with the samples (then the samples must bring them)
    reads_given_masks: bool = False

    def __init__(self, postprocess: MaskPostprocess | None = None) -> None:
        super().__init__()
        self.postprocess = postprocess or MaskPostprocess()

    @abstractmethod
    def propose(self, images: Tensor, given: ObjectMasks | None) -> ObjectMasks:
        """Raw proposals, before post-processing."""

    def forward(self, images: Tensor, given: ObjectMasks | None = None) -> ObjectMasks:
        """(B, 3, S, S) in [0, 1] -> ObjectMasks (B, K, S, S), post-processed."""
        return self.postprocess(self.propose(images, given))

    @property
    def description(self) -> str:
        """What made the masks, stored with annotations."""
        return type(self).__name__


class GroundTruthMasks(MaskProposer):
    """The masks that come with the samples (e.g. the synthetic shapes), post-processed."""

    reads_given_masks = True

    def propose(self, images: Tensor, given: ObjectMasks | None) -> ObjectMasks:
        if given is None:
            size = images.shape[-1]
            return ObjectMasks.empty(images.shape[0], size, size, device=images.device)
        return given
