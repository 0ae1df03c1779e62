"""LLaVA-Mini's modality pre-fusion: a few decoder layers of the LLM's own kind fuse the image into the text.

Input per image: [context visual tokens (e.g. all projected patches); compressed visual tokens; its sample's
instruction text], causal, with answers, padding and image placeholders masked out (so the fused text never sees
an answer). Outputs: the fused text embeddings (which replace the LLM's text embeddings; masked positions keep
their original embeddings, as upstream) and the compressed tokens after fusion (which go to the LLM).

As in the official code (ictnlp/LLaVA-Mini ``llavamini/model/llavamini_arch.py``, ``encode_images_mini``: the
text embeddings are taken ``.detach()``-ed before pre-fusion), no gradient reaches the embedding table through
pre-fusion; a text-only sample is pre-fused with a blank image, as LLaVA-Mini's loader gives it a zero image;
a sample with several images (video frames) gets the mean of its frames' fused text.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from tokencompose.llm.base import TextFusion
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.layers import base_model
from tokencompose.parts import Parts, stream_problem
from tokencompose.types import VisualSequence


class ModalityPreFusion(TextFusion):
    """``num_layers`` fresh decoder layers of ``llm``'s class and config; ``context`` names the visual stream
    that only pre-fusion sees (LLaVA-Mini: all patches); every other stream is fused and passed to the LLM.

    ``llm`` is the model's LLM (its config and layer class; it is not kept): in a recipe, the VLM supplies it.
    ``text_only``: ``"zero_image"`` (LLaVA-Mini) pre-fuses a text-only sample's text with a blank image;
    ``"unfused"`` leaves its text embeddings as they are.
    """

    def __init__(self, llm: CausalLM, num_layers: int = 4, context: str = "patch",
                 text_only: Literal["zero_image", "unfused"] = "zero_image") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"ModalityPreFusion: num_layers={num_layers}; must be >= 1")
        if text_only not in ("zero_image", "unfused"):
            raise ValueError(f"ModalityPreFusion: text_only={text_only!r}; allowed: 'zero_image', 'unfused'")
        self.num_layers, self.context, self.text_only = num_layers, context, text_only
        model = base_model(llm)
        decoder = model.get_decoder()
        if not hasattr(decoder, "layers") or not hasattr(decoder, "rotary_emb"):
            raise ValueError(f"ModalityPreFusion: {type(decoder).__name__} has no `layers`/`rotary_emb` (LLaMA-style)")
        layer_class = type(decoder.layers[0])
        self.layers = nn.ModuleList(layer_class(model.config, layer_idx=i) for i in range(num_layers))
        self.rotary = copy.deepcopy(decoder.rotary_emb)

    def problems(self, parts: Parts) -> list[str]:
        return stream_problem("context", self.context, parts)

    def context_streams(self) -> frozenset[str]:
        return frozenset({self.context})

    def forward(self, text: Tensor, instruction: Tensor, visual: VisualSequence, to_llm: Tensor, counts: Tensor,
                blank_images: Callable[[int], VisualSequence]) -> tuple[Tensor, Tensor]:
        """text (B, T, D), instruction (B, T), visual (I, N, D), to_llm (N,), counts (B,) -> fused text
        (B, T, D), the fused compressed tokens (I, Nq, D) that go to the LLM."""
        arange = torch.arange(len(counts), device=counts.device)
        owner = torch.repeat_interleave(arange, counts)  # (I,) sample of each image
        context, context_valid = visual.tokens[:, ~to_llm], visual.valid[:, ~to_llm]
        compressed = visual.tokens[:, to_llm]
        images = compressed.shape[0]
        text_only = arange[counts == 0]
        if self.text_only == "zero_image" and len(text_only):
            blank = blank_images(len(text_only))
            owner = torch.cat([owner, text_only])
            context = torch.cat([context, blank.tokens[:, ~to_llm]])
            context_valid = torch.cat([context_valid, blank.valid[:, ~to_llm]])
            compressed = torch.cat([compressed, blank.tokens[:, to_llm]])
            counts = counts.clamp(min=1)
        if compressed.shape[0] == 0:  # no image and no blank: nothing to fuse
            return text, compressed
        fused, compressed = self.run_layers(context, context_valid, compressed, text[owner], instruction[owner])
        summed = torch.zeros_like(text).index_add(0, owner, fused.to(text.dtype))
        has = (counts > 0)[:, None, None]
        return torch.where(has, summed / counts.clamp(min=1)[:, None, None], text), compressed[:images]

    def run_layers(self, context: Tensor, context_valid: Tensor, compressed: Tensor, text: Tensor,
                   text_valid: Tensor) -> tuple[Tensor, Tensor]:
        """One pre-fusion per row: context (B, Nc, D), compressed (B, Nq, D), text (B, T, D) + validity masks
        (B, N) bool -> fused text (B, T, D), fused compressed tokens (B, Nq, D)."""
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
