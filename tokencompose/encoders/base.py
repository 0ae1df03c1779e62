"""The vision-encoder interface every encoder implements."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor

from tokencompose.parts import Checks
from tokencompose.types import EncoderOutput, EncoderRequest


@dataclass
class BlockTrace:
    """One transformer block computed explicitly, so its attention is a node of the autograd graph.

    output (B, T, C); attention (B, H, T, T) post-softmax; values and context (B, H, T, c), context =
    attention @ values. T = 1 + h*w tokens (CLS first).
    """

    output: Tensor
    attention: Tensor
    values: Tensor
    context: Tensor


class VisionEncoder(L.LightningModule, Checks):
    """A ViT that gives the CLS token and patch grid of a selected layer plus the final image embedding.

    Subclasses set ``hidden_size`` (Dv), ``embed_dim`` (De), ``image_size``, ``patch_size``, ``image_mean``
    and ``image_std`` so that the parts joined to them can read their widths and preprocessing.

    Inputs of another size than ``image_size`` (also non-square) work everywhere: the patch grid is taken from
    the input, (H // patch, W // patch), and the grid part of the positional embedding is resampled bicubically
    with antialiasing (``position_table``), as the official LeGrad/MaskInversion code does.
    """

    hidden_size: int
    embed_dim: int
    image_size: int
    patch_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    def __init__(self, *, select_layer: int | list[int], freeze: bool) -> None:
        super().__init__()
        self.select_layer = select_layer
        self.freeze = freeze
        self._inverse: tuple[tuple, Tensor] | None = None  # (projection weight's identity, its pseudo-inverse)

    def cls_attention(self, block: int, x: Tensor) -> Tensor:
        """Block input (B, T, C) -> the CLS query's post-softmax attention over the patches, per head
        (B, H, T - 1). Only the CLS query row is computed."""
        queries, keys, _, scale = self.attention_inputs(block, x)
        attention = torch.softmax((queries[:, :, :1] @ keys.transpose(-1, -2)) * scale, dim=-1)  # (B, H, 1, T)
        return attention[:, :, 0, 1:]

    def request_blocks(self, request: EncoderRequest) -> set[int]:
        """The blocks (0-based) whose inputs a request needs."""
        return {layer % self.num_blocks for layer in request.cls_attention | request.attention_keys}

    def answer(self, request: EncoderRequest, block_input: Callable[[int], Tensor]) -> dict[str, Any]:
        """The ``EncoderOutput`` fields a request asks for, from the inputs (B, T, C) of the blocks it needs."""
        blocks = self.num_blocks
        cls = {layer: self.cls_attention(layer % blocks, block_input(layer % blocks)) for layer in request.cls_attention}
        keys = {layer: self.attention_inputs(layer % blocks, block_input(layer % blocks))[1].mean(1)  # (B, T, c)
                for layer in request.attention_keys}
        inverse = self.inverse_projection() if request.inverse_projection else None
        return {"cls_attention": cls, "attention_keys": keys, "inverse_projection": inverse}

    def inverse_projection(self) -> Tensor:
        """(De, Dv): the pseudo-inverse of the final projection (float32), recomputed only when it changed."""
        projection = self.projection_matrix()  # (Dv, De)
        identity = (projection.data_ptr(), projection._version, projection.device, projection.shape)
        if self._inverse is None or self._inverse[0] != identity:
            self._inverse = (identity, torch.linalg.pinv(projection.detach().float()))
        return self._inverse[1]

    @property
    def grid_size(self) -> int:
        """The configured (checkpoint's) grid side; an input's own grid is ``grid_of(pixels)``."""
        return self.image_size // self.patch_size

    def grid_of(self, pixels: Tensor) -> tuple[int, int]:
        """(B, 3, H, W) -> (H // patch, W // patch): the patch grid the input gives (its border beyond whole
        patches is not seen, as with the stride-``patch`` patch convolution)."""
        height, width = pixels.shape[-2:]
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(
                f"{type(self).__name__}: image size {height}x{width} is smaller than the patch size {self.patch_size}"
            )
        return height // self.patch_size, width // self.patch_size

    @abstractmethod
    def position_table(self, grid: tuple[int, int]) -> Tensor:
        """(1 + h*w, C) positional embedding for an (h, w) patch grid: the checkpoint's table at its own grid,
        else its grid rows resampled (``positions.resample_grid_positions``), the CLS row kept."""

    def _apply_freeze(self) -> None:
        if self.freeze:
            self.requires_grad_(False)

    def train(self, mode: bool = True) -> VisionEncoder:
        # A frozen encoder stays in eval mode (no dropout / norm updates) even inside a training model.
        return super().train(mode and not self.freeze)

    @abstractmethod
    def forward(self, pixels: Tensor) -> EncoderOutput:
        """(B, 3, H, W) normalised pixels -> EncoderOutput(cls (B, Dv), patches (B, h, w, Dv), embedding (B, De)),
        (h, w) = ``grid_of(pixels)``."""

    # ---- explicit blocks, for explainability (LeGrad) and MaskInversion -----------------------------------
    @property
    @abstractmethod
    def num_blocks(self) -> int:
        """Number of transformer blocks."""

    @abstractmethod
    def block_input(self, pixels: Tensor, block: int) -> Tensor:
        """(B, 3, H, W) -> (B, T, C): the tokens entering block ``block`` (0-based), T = 1 + h*w."""

    @abstractmethod
    def attention_inputs(self, block: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        """Block input (B, T, C) -> queries, keys, values (B, H, T, c) and the softmax scale."""

    @abstractmethod
    def finish_block(self, block: int, x: Tensor, context: Tensor) -> Tensor:
        """Block input (B, T, C) and attention context (B, H, T, c) -> block output (B, T, C)."""

    def pooled_block_output(self, block: int, x: Tensor, context: Tensor) -> Tensor:
        """The block output averaged over tokens: (B, T, C), (B, H, T, c) -> (B, C).

        Encoders override this to average *before* the MLP's last linear layer (which commutes with the mean),
        so gradients through it cost one matrix product per image instead of one per token.
        """
        return self.finish_block(block, x, context).mean(dim=1)

    @abstractmethod
    def project_pooled(self, pooled: Tensor) -> Tensor:
        """(B, C) pooled tokens -> (B, De): the final norm and projection into the image-embedding space."""

    @abstractmethod
    def projection_matrix(self) -> Tensor:
        """(Dv, De): the final linear projection into the image-embedding space (identity without one)."""

    def trace_block(self, block: int, x: Tensor) -> BlockTrace:
        """Block ``block`` on input (B, T, C), with the post-softmax attention exposed. Equals the library's block."""
        queries, keys, values, scale = self.attention_inputs(block, x)
        attention = torch.softmax((queries @ keys.transpose(-1, -2)) * scale, dim=-1)  # (B, H, T, T)
        context = attention @ values  # (B, H, T, c)
        return BlockTrace(self.finish_block(block, x, context), attention, values, context)
