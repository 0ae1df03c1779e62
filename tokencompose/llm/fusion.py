"""Fusion of visual tokens into the text embeddings at the image placeholders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tokencompose.llm.conversation import IGNORE_INDEX


@dataclass
class FusedInputs:
    """What the LLM consumes. inputs_embeds (B, L, D); attention_mask, position_ids, labels: (B, L).

    visual_kind (B, L): the stream index of each visual position, -1 for text.
    allowed (B, L, L) bool: which keys each position may attend to, set by an ``AttentionPolicy``; None means
    causal over the valid positions. decode_keys (B, L) bool: which of these positions a generated token may
    attend to (None: every valid one).
    """

    inputs_embeds: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    labels: Tensor | None
    visual_kind: Tensor | None = None
    allowed: Tensor | None = None
    decode_keys: Tensor | None = None

    def attention(self, extra: int = 0) -> Tensor:
        """The mask for a forward over these positions plus ``extra`` generated ones after them: (B, L + extra)
        when attention is plain causal, else an additive (B, 1, L + extra, L + extra)."""
        batch, length = self.attention_mask.shape
        valid = torch.cat([self.attention_mask, self.attention_mask.new_ones(batch, extra)], 1)
        if self.allowed is None:
            return valid
        total = length + extra
        allowed = torch.zeros(batch, total, total, dtype=torch.bool, device=valid.device)
        allowed[:, :length, :length] = self.allowed
        allowed[:, length:, :length] = self.key_mask().bool()[:, None, :]  # generated tokens see the decode keys
        allowed[:, length:, length:] = torch.ones(extra, extra, dtype=torch.bool, device=valid.device).tril()
        allowed |= torch.eye(total, dtype=torch.bool, device=valid.device)  # no empty rows
        dtype = self.inputs_embeds.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]

    def key_mask(self) -> Tensor:
        """(B, L): what a generated token may attend to (for decoding with a cache)."""
        return self.attention_mask if self.decode_keys is None else self.attention_mask * self.decode_keys


def fuse_visual_tokens(
    input_ids: Tensor,
    text_embeds: Tensor,
    attention_mask: Tensor,
    visual: Tensor,
    visual_valid: Tensor,
    image_token_id: int,
    labels: Tensor | None = None,
    left_pad: bool = False,
    visual_kind: Tensor | None = None,
) -> FusedInputs:
    """Each placeholder in ``input_ids`` is replaced by one image's N visual tokens.

    input_ids (B, T) with one ``image_token_id`` per image, images in row-major order; text_embeds (B, T, D);
    attention_mask (B, T); visual (I, N, D) and visual_valid (I, N) for the I placeholders; labels (B, T);
    visual_kind (N,) the stream index of each visual slot, recorded per position in the result.
    Returns tensors of length L = max_b(T_b + images_b * (N - 1)). Invalid visual slots (an image with fewer
    objects than slots) get attention 0 and no position: with ``position_ids = cumsum(mask) - 1`` the result
    equals removing them. ``left_pad`` right-aligns rows (for generation), else rows are left-aligned.
    """
    batch, length = input_ids.shape
    num_images, per_image, width = visual.shape
    is_image = input_ids == image_token_id  # (B, T)
    if int(is_image.sum()) != num_images:
        raise ValueError(f"{int(is_image.sum())} image placeholders in input_ids but {num_images} images")
    span = torch.where(is_image, per_image, 1)  # (B, T): positions each input token takes
    end = span.cumsum(1)
    start = end - span  # (B, T): where each input token lands
    row_length = end[:, -1]
    out_length = int(row_length.max())
    if left_pad:
        start = start + (out_length - row_length)[:, None]

    embeds = text_embeds.new_zeros(batch, out_length, width)
    mask = attention_mask.new_zeros(batch, out_length)
    new_labels = None if labels is None else labels.new_full((batch, out_length), IGNORE_INDEX)

    rows, cols = (~is_image).nonzero(as_tuple=True)
    embeds[rows, start[rows, cols]] = text_embeds[rows, cols]
    mask[rows, start[rows, cols]] = attention_mask[rows, cols]
    if new_labels is not None:
        new_labels[rows, start[rows, cols]] = labels[rows, cols]

    rows, cols = is_image.nonzero(as_tuple=True)  # row-major: the i-th hit is the i-th image
    slots = start[rows, cols][:, None] + torch.arange(per_image, device=input_ids.device)  # (I, N)
    embeds[rows[:, None], slots] = visual.to(embeds.dtype)
    mask[rows[:, None], slots] = visual_valid.to(mask.dtype)
    kinds = input_ids.new_full((batch, out_length), -1)
    if visual_kind is not None:
        kinds[rows[:, None], slots] = visual_kind.to(kinds.dtype)[None].expand(len(rows), -1)

    position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
    return FusedInputs(embeds, mask, position_ids, new_labels, visual_kind=kinds)
