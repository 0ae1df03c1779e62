"""One token per object mask, with IoU pruning, a top-k budget and an optional background token."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.masks.ops import background_mask, greedy_mask_nms, mask_area, select_top_k
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.tokenizers.object_embedding import MaskedPoolEmbedding, ObjectEmbedding
from tokencompose.types import EncoderOutput, EncoderRequest, ObjectMasks, ObjectRequirements, TokenStream


class ObjectTokenizer(VisualTokenizer):
    """Object tokens from masks supplied with the images.

    Masks are ranked (by detector score or by area), optionally de-duplicated by greedy mask NMS, and the
    best ``max_objects`` are embedded, best first. ``max_objects`` and ``iou_threshold`` are plain
    attributes: a test-time override changes the budget without retraining.

    Args:
        embedding: how a mask becomes a token (default: masked average pooling of patch tokens).
        max_objects: object token slots per image (at test time; an override changes the budget).
        train_max_objects: slots while training, e.g. 32 to oversample (Mask-LLaVA); None = ``max_objects``.
        iou_threshold: drop a mask whose IoU with a better kept mask exceeds this; None keeps all.
        rank_by: ``"score"`` (detector confidence) or ``"area"``.
        background: append one token for the complement of the kept masks' union.
    """

    def __init__(
        self,
        embedding: ObjectEmbedding | None = None,
        max_objects: int = 20,
        train_max_objects: int | None = None,
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
        if background and not self.embedding.embeds_from_masks:
            raise ValueError(
                f"ObjectTokenizer: background=true needs an embedding computed from masks, not "
                f"{type(self.embedding).__name__}; let the mask proposer add the background mask (`background: true`)"
            )
        self.max_objects = max_objects
        self.train_max_objects = train_max_objects
        self.iou_threshold = iou_threshold
        self.rank_by = rank_by
        self.background = background

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput + ObjectMasks (B, K, H, W) -> TokenStream(tokens (B, n, D), valid (B, n)).

        n = budget (+1 with ``background``). Slots beyond an image's object count are invalid. The background
        token is the masked average of patch tokens outside the kept masks when embeddings are stored.
        """
        if objects is None:
            raise ValueError("ObjectTokenizer needs object masks with the batch (key 'objects'); none were given")
        index, valid = self.select(objects)  # (B, n), (B, n)
        rows = torch.arange(index.shape[0], device=index.device)[:, None]
        selected = self._gather(objects.masks.bool(), rows, index) & valid[:, :, None, None]  # (B, n, H, W)
        stored = None if objects.embeddings is None else self._gather(objects.embeddings, rows, index)
        tokens, usable = self.embedding(features, selected, stored)
        valid = valid & usable
        if self.background:
            rest = background_mask(selected, valid)[:, None]  # (B, 1, H, W)
            bg_token, bg_usable = self.embedding(features, rest, None)
            tokens = torch.cat([tokens, bg_token], dim=1)
            valid = torch.cat([valid, bg_usable], dim=1)
        tokens = tokens * valid[..., None]  # padding slots carry exact zeros
        return TokenStream(tokens, valid)

    def budget(self, training: bool) -> int:
        """Object slots: ``train_max_objects`` in training (oversampling), else ``max_objects``."""
        return self.train_max_objects if training and self.train_max_objects is not None else self.max_objects

    def select(self, objects: ObjectMasks) -> tuple[Tensor, Tensor]:
        """ObjectMasks (B, K, ...) -> indices of the kept objects, best first (B, n), valid (B, n); n = budget."""
        masks = objects.masks.bool()
        valid = objects.valid & (mask_area(masks) > 0)
        order = objects.scores.float() if self.rank_by == "score" else mask_area(masks)
        keep = valid if self.iou_threshold is None else greedy_mask_nms(masks, order, valid, self.iou_threshold)
        return select_top_k(order, keep, self.budget(self.training))

    @staticmethod
    def _gather(values: Tensor, rows: Tensor, index: Tensor) -> Tensor:
        """values (B, K, ...) at index (B, n) -> (B, n, ...); zeros when there are no objects at all."""
        if values.shape[1] == 0:
            return values.new_zeros(index.shape[0], index.shape[1], *values.shape[2:])
        return values[rows, index]

    def encoder_request(self) -> EncoderRequest:
        return self.embedding.encoder_request()

    def object_requirements(self, encoder: VisionEncoder) -> ObjectRequirements:
        stored = None if self.embedding.embeds_from_masks else encoder.embed_dim
        return ObjectRequirements(masks=True, embedding_width=stored)

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return self.budget(training) + int(self.background)

    def output_width(self, encoder: VisionEncoder) -> int:
        return self.embedding.output_width(encoder)
