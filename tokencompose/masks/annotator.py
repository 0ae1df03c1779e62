"""Proposals + MaskInversion in one stage: the object annotations the tokenizers read.

Offline, the annotate job runs it once per image and stores the result in shards; online (new images at
inference), the VLM runs it before its tokenizers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.base import ObjectSource
from tokencompose.masks.mask_inversion import MaskInversionSettings, mask_inversion_fast
from tokencompose.masks.proposer import GroundTruthMasks, MaskProposer
from tokencompose.types import ObjectMasks, ObjectRequirements


def unnormalise(pixels: Tensor, encoder: VisionEncoder) -> Tensor:
    """Encoder-normalised pixels (B, 3, S, S) -> images in [0, 1]."""
    mean = torch.tensor(encoder.image_mean, device=pixels.device, dtype=pixels.dtype)[:, None, None]
    std = torch.tensor(encoder.image_std, device=pixels.device, dtype=pixels.dtype)[:, None, None]
    return (pixels * std + mean).clamp(0, 1)


class ObjectAnnotator(ObjectSource):
    """Masks from ``proposer`` (default: the masks given with the samples), then one MaskInversion embedding
    per mask (skipped when ``inversion`` is None).

    forward: encoder, pixels (B, 3, S, S) normalised, given masks -> ObjectMasks (B, K, S, S) with embeddings.
    """

    needs_autograd = True
    computes_objects = True

    def __init__(self, proposer: MaskProposer | None = None, inversion: MaskInversionSettings | None = None) -> None:
        super().__init__()
        self.proposer = proposer if proposer is not None else GroundTruthMasks()
        self.inversion = inversion if inversion is not None else MaskInversionSettings()

    def data_requirements(self, needs: ObjectRequirements) -> ObjectRequirements:
        """Nothing, unless its proposer reads the masks that come with the samples (``GroundTruthMasks``);
        embeddings are always computed here."""
        return ObjectRequirements(masks=needs.masks and self.proposer.reads_given_masks)

    @property
    def description(self) -> str:
        return f"{self.proposer.description} + MaskInversion({self.inversion})"

    def forward(self, encoder: VisionEncoder, pixels: Tensor, given: ObjectMasks | None = None) -> ObjectMasks:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "ObjectAnnotator runs MaskInversion, which needs autograd: set `trainer.inference_mode: false`"
            )
        objects = self.proposer(unnormalise(pixels, encoder), given)
        if objects.masks.shape[1] == 0:
            objects.embeddings = pixels.new_zeros(pixels.shape[0], 0, encoder.embed_dim)
            return objects
        embeddings, _ = mask_inversion_fast(encoder, pixels, objects.masks.float(), objects.valid, self.inversion)
        objects.embeddings = embeddings * objects.valid[..., None]
        return objects
