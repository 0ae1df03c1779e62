"""The masks slot's extension point: where the images' object masks come from, before the tokenizers run.

``GivenObjects`` (default) passes on what came with the batch (ground truth, or annotations stored by
``tokencompose annotate``); ``ObjectAnnotator`` computes masks and MaskInversion embeddings online.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
from torch import Tensor

from tokencompose.parts import Checks
from tokencompose.types import ObjectMasks, ObjectRequirements

if TYPE_CHECKING:
    from tokencompose.encoders.base import VisionEncoder


class ObjectSource(L.LightningModule, Checks):
    """Object masks (+ embeddings) for a batch of images."""

    #: whether it needs autograd at inference (MaskInversion optimises embeddings), so prediction cannot run
    #: under ``torch.inference_mode``
    needs_autograd: bool = False
    #: whether it computes objects (its cost is the mask front end) rather than passing stored ones on
    computes_objects: bool = False

    def forward(self, encoder: VisionEncoder, pixels: Tensor, given: ObjectMasks | None) -> ObjectMasks | None:
        """encoder, pixels (B, 3, S, S) normalised, the masks that came with them -> ObjectMasks (B, K, S, S)."""
        return given

    def data_requirements(self, needs: ObjectRequirements) -> ObjectRequirements:
        """What the samples must bring, given what the tokenizers read (``needs``)."""
        return needs


class GivenObjects(ObjectSource):
    """The objects that came with the batch, as they are."""
