"""One token per object mask, with IoU pruning, a top-k budget and an optional background token."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.ops import background_mask, greedy_mask_nms, mask_area, select_top_k
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.tokenizers.object_embedding import MaskedPoolEmbedding, ObjectEmbedding
from tokencompose.types import EncoderOutput, ObjectMasks, TokenStream


class ObjectTokenizer(VisualTokenizer):
    """Object tokens from masks supplied with the images.

    Masks are ranked (by detector score or by area), optionally de-duplicated by greedy mask NMS, and the
    best ``max_objects`` are embedded, best first. ``max_objects`` and ``iou_threshold`` are plain
    attributes: a test-time override changes the budget without retraining.

    Args:
        embedding: how a mask becomes a token (default: masked average pooling of patch tokens).
        max_objects: object token slots per image.
        iou_threshold: drop a mask whose IoU with a better kept mask exceeds this; None keeps all.
        rank_by: ``"score"`` (detector confidence) or ``"area"``.
        background: append one token for the complement of the kept masks' union.
    """

    def __init__(
        self,
        embedding: ObjectEmbedding | None = None,
        max_objects: int = 20,
        iou_threshold: float | None = None,
        rank_by: Literal["score", "area"] = "score",
        background: bool = False,
    ) -> None:
        super().__init__()
        if max_objects < 0:
            raise ValueError(f"ObjectTokenizer: max_objects={max_objects}; must be >= 0")
        if rank_by not in ("score", "area"):
            raise ValueError(f"ObjectTokenizer: rank_by={rank_by!r}; allowed: 'score', 'area'")
        if iou_threshold is not None and not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"ObjectTokenizer: iou_threshold={iou_threshold}; must be in [0, 1] or None")
        self.embedding = embedding if embedding is not None else MaskedPoolEmbedding()
        self.max_objects = max_objects
        self.iou_threshold = iou_threshold
        self.rank_by = rank_by
        self.background = background

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput + ObjectMasks (B, K, H, W) -> TokenStream(tokens (B, n, D), valid (B, n)).

        n = max_objects (+1 with ``background``). Slots beyond an image's object count are invalid.
        """
        if objects is None:
            raise ValueError("ObjectTokenizer needs object masks with the batch (key 'objects'); none were given")
        selected, valid = self.select(objects)  # (B, n, H, W), (B, n)
        tokens, usable = self.embedding(features, selected)
        valid = valid & usable
        if self.background:
            rest = background_mask(selected, valid)[:, None]  # (B, 1, H, W)
            bg_token, bg_usable = self.embedding(features, rest)
            tokens = torch.cat([tokens, bg_token], dim=1)
            valid = torch.cat([valid, bg_usable], dim=1)
        tokens = tokens * valid[..., None]  # padding slots carry exact zeros
        return TokenStream(tokens, valid)

    def select(self, objects: ObjectMasks) -> tuple[Tensor, Tensor]:
        """ObjectMasks (B, K, H, W) -> the kept masks, best first (B, max_objects, H, W), valid (B, max_objects)."""
        masks = objects.masks.bool()
        valid = objects.valid & (mask_area(masks) > 0)
        order = objects.scores.float() if self.rank_by == "score" else mask_area(masks)
        keep = valid if self.iou_threshold is None else greedy_mask_nms(masks, order, valid, self.iou_threshold)
        index, selected_valid = select_top_k(order, keep, self.max_objects)  # (B, n)
        if masks.shape[1] == 0:
            selected = masks.new_zeros(masks.shape[0], self.max_objects, *masks.shape[2:])
        else:
            selected = masks[torch.arange(masks.shape[0], device=masks.device)[:, None], index]  # (B, n, H, W)
        return selected & selected_valid[:, :, None, None], selected_valid

    def num_tokens(self, encoder: VisionEncoder) -> int:
        return self.max_objects + int(self.background)

    def output_width(self, encoder: VisionEncoder) -> int:
        return self.embedding.output_width(encoder)
