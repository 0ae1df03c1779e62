"""The LLM's own decoder layers, run one by one: for decoding policies that prune tokens between layers.

``DecoderStack`` holds the layers, rotary embedding, final norm and head of a LLaMA-style ``transformers``
causal LM (no model code copied). ``run`` sends hidden states through a range of layers with a causal mask over
the given valid keys, optionally with a per-layer KV cache (each layer's cache may have its own length, so a
pruned layer only keeps its kept tokens). ``attention_of`` captures a layer's post-softmax attention with a
forward hook, which needs the eager attention implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from tokencompose.llm.base import AttentionPolicy
from tokencompose.llm.causal_lm import CausalLM


def causal_mask(valid: Tensor, queries: int, dtype: torch.dtype) -> Tensor:
    """Keys (B, K) valid, the last ``queries`` of them asking -> additive (B, 1, queries, K)."""
    keys = valid.shape[1]
    rows = torch.arange(keys - queries, keys, device=valid.device)[:, None]
    allowed = (torch.arange(keys, device=valid.device)[None] <= rows)[None] & valid.bool()[:, None, :]
    allowed |= torch.arange(keys, device=valid.device)[None] == rows  # a padded query still attends to itself
    return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def base_model(lm: CausalLM) -> nn.Module:
    """The ``transformers`` model under a LoRA wrapper, if any."""
    return lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model


def stack_problems(lm: CausalLM, who: str, attention: AttentionPolicy | None = None,
                   needs_attention: bool = True) -> list[str]:
    """What a policy that runs the layers itself needs: LLaMA-style layers, eager attention, and (given the
    model's attention policy) a plain causal mask, which is all ``DecoderStack.run`` applies."""
    model = base_model(lm)
    decoder = model.get_decoder()
    problems = []
    if not all(hasattr(decoder, name) for name in ("layers", "rotary_emb", "norm")):
        problems.append(f"{who} runs the LLM's decoder layers itself; {type(decoder).__name__} has no "
                        "`layers`/`rotary_emb`/`norm` (a LLaMA-style model)")
    if needs_attention and model.config._attn_implementation != "eager":
        problems.append(f"{who} reads attention weights: build the LLM with `attn_implementation: eager` "
                        f"(model.llm.init_args.attn_implementation; it is {model.config._attn_implementation!r})")
    if attention is not None and attention.changes_mask:
        problems.append(f"{who} runs the LLM's layers with a causal mask and cannot honour "
                        f"{type(attention).__name__}'s attention (model.attention)")
    return problems


class DecoderStack:
    """A causal LM's decoder layers, rotary embedding, final norm and head."""

    def __init__(self, lm: CausalLM) -> None:
        model = base_model(lm)
        decoder = model.get_decoder()
        self.layers = decoder.layers
        self.rotary = decoder.rotary_emb
        self.norm = decoder.norm
        self.head = model.get_output_embeddings()

    def __len__(self) -> int:
        return len(self.layers)

    def run(self, x: Tensor, positions: Tensor, valid: Tensor, layers: range, queries: int, cache=None) -> Tensor:
        """Hidden states (B, q, D) of the last ``queries`` of the keys ``valid`` (B, K) -> (B, q, D) after
        ``layers``; with a ``DynamicCache`` each layer appends its keys and values to its own entry."""
        rotary = self.rotary(x, positions)
        mask = causal_mask(valid, queries, x.dtype)
        for i in layers:
            x = self.layers[i](x, attention_mask=mask, position_ids=positions, past_key_values=cache,
                               use_cache=cache is not None, position_embeddings=rotary)
        return x

    def logits(self, x: Tensor) -> Tensor:
        """Hidden states (B, q, D) -> logits of the last position (B, V)."""
        return self.head(self.norm(x[:, -1:]))[:, 0]

    @contextmanager
    def attention_of(self, layer: int) -> Iterator[list[Tensor]]:
        """Within the block, every forward of ``layer`` appends its attention weights (B, H, q, K) to the list."""
        captured: list[Tensor] = []
        hook = self.layers[layer].self_attn.register_forward_hook(lambda _m, _i, out: captured.append(out[1]))
        try:
            yield captured
        finally:
            hook.remove()
