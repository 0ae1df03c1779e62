"""The vision-encoder interface every encoder implements."""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
from torch import Tensor

from tokencompose.types import EncoderOutput


class VisionEncoder(L.LightningModule):
    """A ViT that gives the CLS token and patch grid of a selected layer plus the final image embedding.

    Subclasses set ``hidden_size`` (Dv), ``embed_dim`` (De), ``image_size``, ``patch_size``, ``image_mean``
    and ``image_std`` so that the parts joined to them can read their widths and preprocessing.
    """

    hidden_size: int
    embed_dim: int
    image_size: int
    patch_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    def __init__(self, *, select_layer: int, freeze: bool) -> None:
        super().__init__()
        self.select_layer = select_layer
        self.freeze = freeze

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def _apply_freeze(self) -> None:
        if self.freeze:
            self.requires_grad_(False)

    def train(self, mode: bool = True) -> VisionEncoder:
        # A frozen encoder stays in eval mode (no dropout / norm updates) even inside a training model.
        return super().train(mode and not self.freeze)

    @abstractmethod
    def forward(self, pixels: Tensor) -> EncoderOutput:
        """(B, 3, S, S) normalised pixels -> EncoderOutput(cls (B, Dv), patches (B, h, w, Dv), embedding (B, De))."""
