"""VoCo-LLaMA's attention: text after a stream's tokens cannot see anything before them.

Port of the rule in Yxxxb/VoCo-LLaMA ``llava/model/language_model/llava_llama_1stg.py`` (``make_voco_mask_llava``):
positions up to and including the compression tokens attend causally as usual; positions after the last one
cannot attend to anything before the first one (system prompt and image), so the image reaches the answer only
through the compression tokens' activations.
"""

from __future__ import annotations

import torch

from tokencompose.llm.base import AttentionPolicy
from tokencompose.llm.fusion import FusedInputs
from tokencompose.parts import Parts, stream_problem


class HideBehindStream(AttentionPolicy):
    """Positions after ``stream``'s last token cannot attend to anything before its first token; a generated
    token neither. Rows without that stream are left causal."""

    changes_mask = True

    def __init__(self, stream: str = "voco") -> None:
        super().__init__()
        self.stream = stream

    def problems(self, parts: Parts) -> list[str]:
        return stream_problem("stream", self.stream, parts)

    def forward(self, fused: FusedInputs, kinds: tuple[str, ...]) -> FusedInputs:
        """FusedInputs (B, L) -> the same with ``allowed`` (B, L, L) and ``decode_keys`` (B, L) set."""
        is_kind = fused.visual_kind == kinds.index(self.stream)  # (B, L)
        length = is_kind.shape[1]
        positions = torch.arange(length, device=is_kind.device)
        has = is_kind.any(1)
        first = torch.where(is_kind, positions, length).min(1).values  # (B,)
        last = torch.where(is_kind, positions, -1).max(1).values
        hidden = (positions[None] < first[:, None]) & has[:, None]  # (B, L): keys behind the stream
        after = (positions[None] > last[:, None]) & has[:, None]  # (B, L): queries past the stream
        causal = positions[None, :, None] >= positions[None, None, :]  # (1, L, L)
        fused.allowed = causal & fused.attention_mask.bool()[:, None, :] & ~(after[:, :, None] & hidden[:, None, :])
        fused.decode_keys = ~hidden
        return fused
