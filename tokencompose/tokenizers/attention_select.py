"""FasterVLM: keep the patches the encoder's CLS token attends to most, before the LLM."""

from __future__ import annotations

import torch
from torch import Tensor

from tokencompose.encoders.base import VisionEncoder
from tokencompose.parts import Parts
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import EncoderOutput, EncoderRequest, ObjectMasks, TokenStream


class CLSAttentionSelector(VisualTokenizer):
    """The top ``keep`` patches by the CLS query's attention at encoder layer ``layer`` (averaged over heads),
    in their original order; ``keep=None`` keeps all (= LLaVA-1.5). ``keep`` can change at test time.
    """

    def __init__(self, keep: int | None = None, layer: int = -2) -> None:
        super().__init__()
        if keep is not None and keep < 1:
            raise ValueError(f"CLSAttentionSelector: keep={keep}; must be >= 1 or None")
        self.keep = keep
        self.layer = layer

    def encoder_request(self) -> EncoderRequest:
        return EncoderRequest(cls_attention=frozenset({self.layer}))

    def problems(self, parts: Parts) -> list[str]:
        blocks = parts.encoder.num_blocks
        return [] if -blocks <= self.layer < blocks else [f"layer={self.layer}: the encoder has {blocks} blocks"]

    def forward(self, features: EncoderOutput, objects: ObjectMasks | None = None) -> TokenStream:
        """EncoderOutput.patches (B, h, w, D) + cls_attention[layer] (B, H, h*w) -> TokenStream (B, keep, D)."""
        patches = features.patches.flatten(1, 2)  # (B, h*w, D)
        if self.keep is None or self.keep >= patches.shape[1]:
            tokens = patches
        else:
            index = self.kept_patches(features)  # (B, keep)
            tokens = patches.gather(1, index[..., None].expand(-1, -1, patches.shape[-1]))
        return TokenStream(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))

    def kept_patches(self, features: EncoderOutput) -> Tensor:
        """EncoderOutput.cls_attention[layer] (B, H, h*w) -> indices (B, keep) of the kept patches in raster order
        (all of them when ``keep`` is None or covers the grid); what ``forward`` gathers, and the explorer shows."""
        score = features.cls_attention[self.layer].mean(dim=1)  # (B, h*w): mean over heads, as FasterVLM
        if self.keep is None or self.keep >= score.shape[1]:
            return torch.arange(score.shape[1], device=score.device).expand(score.shape[0], -1)
        return score.topk(self.keep, dim=1).indices.sort(dim=1).values  # original order

    def num_tokens(self, encoder: VisionEncoder, training: bool = False) -> int:
        return encoder.grid_size**2 if self.keep is None else min(self.keep, encoder.grid_size**2)

    def output_width(self, encoder: VisionEncoder) -> int:
        return encoder.hidden_size
