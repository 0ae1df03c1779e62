"""FastV: after LLM layer K, drop the visual tokens that the last token attended to least at layer K-1.

Training-free, at inference: a ``DecodingPolicy``. It runs the LLM's own decoder layers (``DecoderStack``), so
that layers below K keep every token and layers from K on only the kept ones — with a KV cache too: each
layer's cache has its own length and gets its own mask. The attention weights of layer K-1 are read with a
forward hook, which needs the eager attention implementation (checked when the model is built).

Two official variants (pkunlp-icler/FastV): the KV-cache one (``lmms-eval-with-kvcache/fastv_kvcache.py``)
ranks once, at prefill, and keeps ``int(N * keep_ratio)`` of the N image tokens; the in-place one
(``fast_v_inplace`` in its ``modeling_llama.py``) supports no cache, re-runs the whole sequence every step and
re-ranks from the attention of the current last token. ``rerank_each_step`` picks the second.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import DynamicCache

from tokencompose.llm.base import DecodingPolicy
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.fusion import FusedInputs
from tokencompose.llm.layers import DecoderStack, stack_problems
from tokencompose.llm.visual_pruning import compact, lowest_visual
from tokencompose.parts import Parts


class FastV(DecodingPolicy):
    """Keep ``int(N * (1 - drop_ratio))`` of the N visual tokens after layer ``layer`` (K); ``drop_ratio`` 0
    changes nothing. Paper defaults K = 2, 50 %. Text tokens are always kept; positions keep their original ids.

    ``rerank_each_step``: decode without a KV cache and re-select the kept tokens at every step from the
    attention of the newest token (the official in-place variant; the cache is not used even if asked for).
    By default the tokens kept at prefill stay kept (the official KV-cache variant), with or without a cache.
    """

    def __init__(self, layer: int = 2, drop_ratio: float = 0.5, rerank_each_step: bool = False) -> None:
        super().__init__()
        if layer < 1:
            raise ValueError(f"FastV: layer={layer}; must be >= 1 (the ranking uses layer K-1's attention)")
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"FastV: drop_ratio={drop_ratio}; must be in [0, 1)")
        self.layer = layer
        self.drop_ratio = drop_ratio
        self.rerank_each_step = rerank_each_step

    def problems(self, parts: Parts) -> list[str]:
        return stack_problems(parts.llm, "FastV", parts.attention)

    def stepper(self, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> FastVStepper:
        return FastVStepper(self, lm, prompt, use_cache and not self.rerank_each_step)

    def kept_fraction(self, visual_tokens: int, layers: int) -> float:
        kept = self.kept_count(visual_tokens)
        return (self.layer * visual_tokens + (layers - self.layer) * kept) / (layers * max(1, visual_tokens))

    def kept_count(self, visual_tokens: int) -> int:
        """How many of N visual tokens stay: ``int(N * keep_ratio)``, keep_ratio = 1 - drop_ratio (rounded
        down, as the official KV-cache variant's ``topk(int(576 * ratio))``)."""
        return int(visual_tokens * (1.0 - self.drop_ratio))

    def keep_index(self, attention: Tensor, valid: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        """Layer K-1 attention (B, H, L, L), valid (B, L), visual (B, L) bool -> (kept positions (B, L') in
        order, their validity (B, L')).

        Each row drops its own N_row - kept_count(N_row) lowest-ranked visual tokens, as it would alone; a row
        that drops more than another keeps its extra drops in place, masked out (``compact``), so padding and
        the other rows of a batch never change what a row keeps.
        """
        score = attention[:, :, -1].float().mean(1)  # the last token's row, mean over heads
        counts = visual.sum(1).tolist()
        drops = torch.tensor([n - self.kept_count(n) for n in counts], device=visual.device)[:, None]  # (B, 1)
        return compact(lowest_visual(score, visual, drops), valid.bool())


class FastVStepper:
    """Greedy decoding steps with FastV pruning: at prefill (the same kept set with and without a cache), or,
    with ``rerank_each_step`` and no cache, again at every step over the whole sequence."""

    def __init__(self, fastv: FastV, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> None:
        if prompt.allowed is not None:
            raise ValueError("FastV cannot honour an attention policy's mask (see FastV.problems)")
        self.stack = DecoderStack(lm)
        self.fastv, self.prompt, self.use_cache = fastv, prompt, use_cache
        self.embeds, self.positions = prompt.inputs_embeds, prompt.position_ids
        self.valid = prompt.attention_mask.bool()
        self.visual = (prompt.visual_kind >= 0) & self.valid if prompt.visual_kind is not None else torch.zeros_like(self.valid)
        self.keep: Tensor | None = None  # (B, L') the prompt positions kept after layer K, and their validity
        self.keep_valid: Tensor | None = None
        self.cache = DynamicCache() if use_cache else None

    def _run(self, x: Tensor, positions: Tensor, valid: Tensor, layers: range, queries: int) -> Tensor:
        return self.stack.run(x, positions, valid, layers, queries, self.cache)

    def _forward_full(self) -> Tensor:
        """Every position through layers < K, the kept ones through the rest -> last logits (B, V)."""
        k = self.fastv.layer
        with self.stack.attention_of(k - 1) as captured:
            x = self._run(self.embeds, self.positions, self.valid, range(k), self.embeds.shape[1])
        if self.fastv.rerank_each_step:  # the newest token's attention over the whole sequence (B, H, L, L)
            keep, valid = self.fastv.keep_index(captured[-1], self.valid, self.visual)
            self.keep = keep
        else:
            if self.keep is None:
                prompt = self.prompt.inputs_embeds.shape[1]
                self.keep, self.keep_valid = self.fastv.keep_index(captured[-1], self.valid[:, :prompt],
                                                                   self.visual[:, :prompt])
            grown = self.embeds.shape[1] - self.prompt.inputs_embeds.shape[1]  # generated tokens are always kept
            keep = torch.cat([self.keep, torch.arange(self.prompt.inputs_embeds.shape[1], self.embeds.shape[1],
                                                      device=x.device).expand(x.shape[0], grown)], dim=1)
            valid = torch.cat([self.keep_valid, torch.ones_like(self.keep_valid[:, :1]).expand(-1, grown)], dim=1)
        x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        positions = self.positions.gather(1, keep)
        self.kept_valid = valid
        x = self._run(x, positions, valid, range(k, len(self.stack)), x.shape[1])
        return self.stack.logits(x)

    def first(self) -> Tensor:
        return self._forward_full()

    def next(self, embeds: Tensor, positions: Tensor) -> Tensor:
        one = torch.ones_like(self.valid[:, :1])
        self.valid = torch.cat([self.valid, one], dim=1)
        if not self.use_cache:
            self.embeds = torch.cat([self.embeds, embeds], dim=1)
            self.positions = torch.cat([self.positions, positions], dim=1)
            self.visual = torch.cat([self.visual, torch.zeros_like(one)], dim=1)
            return self._forward_full()
        self.kept_valid = torch.cat([self.kept_valid, one], dim=1)
        k = self.fastv.layer
        x = self._run(embeds, positions, self.valid, range(k), 1)  # layers < K: the full-length caches
        x = self._run(x, positions, self.kept_valid, range(k, len(self.stack)), 1)  # pruned caches
        return self.stack.logits(x)
