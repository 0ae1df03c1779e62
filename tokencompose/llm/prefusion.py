"""LLaVA-Mini's modality pre-fusion: a few decoder layers of the LLM's own kind fuse the image into the text.

Input per sample: [context visual tokens (e.g. all projected patches); compressed visual tokens; instruction
text], causal, with answers, padding and image placeholders masked out (so the fused text never sees an answer).
Outputs: the fused text embeddings (which replace the LLM's text embeddings; masked positions keep their
original, detached embeddings, as upstream) and the compressed tokens after fusion (which go to the LLM).

As in the official code (ictnlp/LLaVA-Mini ``llavamini/model/llavamini_arch.py``, ``encode_images_mini``: the
text embeddings are taken ``.detach()``-ed before pre-fusion), no gradient reaches the embedding table through
pre-fusion; a text-only sample is pre-fused with a blank image, as LLaVA-Mini's loader gives it a zero image.
"""

from __future__ import annotations

import copy
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn

from tokencompose.llm.causal_lm import CausalLM


class ModalityPreFusion(L.LightningModule):
    """``num_layers`` fresh decoder layers of the LLM's class and config; ``context`` names the visual stream
    that only pre-fusion sees (LLaVA-Mini: all patches); every other stream is fused and passed to the LLM.

    ``text_only``: ``"zero_image"`` (LLaVA-Mini) pre-fuses a text-only sample's text with a blank image;
    ``"unfused"`` leaves its text embeddings as they are.
    """

    def __init__(self, num_layers: int = 4, context: str = "patch",
                 text_only: Literal["zero_image", "unfused"] = "zero_image") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"ModalityPreFusion: num_layers={num_layers}; must be >= 1")
        if text_only not in ("zero_image", "unfused"):
            raise ValueError(f"ModalityPreFusion: text_only={text_only!r}; allowed: 'zero_image', 'unfused'")
        self.num_layers = num_layers
        self.context = context
        self.text_only = text_only

    def attach(self, llm: CausalLM) -> None:
        """Build the layers from the LLM (called once by the model)."""
        model = llm.model.get_base_model() if hasattr(llm.model, "get_base_model") else llm.model
        decoder = model.get_decoder()
        if not hasattr(decoder, "layers") or not hasattr(decoder, "rotary_emb"):
            raise ValueError(f"ModalityPreFusion: {type(decoder).__name__} has no `layers`/`rotary_emb` (LLaMA-style)")
        layer_class = type(decoder.layers[0])
        self.layers = nn.ModuleList(layer_class(model.config, layer_idx=i) for i in range(self.num_layers))
        self.rotary = copy.deepcopy(decoder.rotary_emb)

    def forward(self, context: Tensor, context_valid: Tensor, compressed: Tensor, text: Tensor,
                text_valid: Tensor) -> tuple[Tensor, Tensor]:
        """context (B, Nc, D), compressed (B, Nq, D), text (B, T, D) + validity masks (B, N) bool
        -> fused text (B, T, D), fused compressed tokens (B, Nq, D)."""
        text = text.detach()  # upstream: pre-fusion reads detached text embeddings
        x = torch.cat([context, compressed, text.to(context.dtype)], dim=1)  # (B, L, D)
        valid = torch.cat([context_valid, torch.ones(compressed.shape[:2], dtype=torch.bool, device=x.device), text_valid], 1)
        length = x.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = causal & valid[:, None, :]
        allowed |= torch.eye(length, dtype=torch.bool, device=x.device)  # a masked row attends to itself: no NaN
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, torch.finfo(x.dtype).min)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        rotary = self.rotary(x, positions)
        for layer in self.layers:
            x = layer(x, attention_mask=mask[:, None], position_ids=positions, position_embeddings=rotary)
        fused_text = torch.where(text_valid[..., None], x[:, -text.shape[1] :], text.to(x.dtype))
        return fused_text, x[:, context.shape[1] : context.shape[1] + compressed.shape[1]]
