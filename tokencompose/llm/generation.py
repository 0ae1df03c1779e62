"""Greedy decoding over fused embeddings, with or without a KV cache (the two give the same tokens).

The loop asks a *stepper* for next-token logits (``tokencompose.llm.base.Stepper``): ``PlainStepper`` runs the
LLM as is; a ``DecodingPolicy`` (FastV, FitPrune, SparseVLM) supplies its own that drives the LLM's layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tokencompose.llm.base import Stepper
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.fusion import FusedInputs
from tokencompose.profiling import StageProfiler, stage


class PlainStepper:
    """The LLM as it is. With a cache, each step feeds one token; without, the whole sequence again."""

    def __init__(self, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> None:
        self.lm, self.prompt, self.use_cache = lm, prompt, use_cache
        self.embeds, self.positions = prompt.inputs_embeds, prompt.position_ids
        self.keys = prompt.key_mask()  # what every new token may attend to (an attention policy may hide some)
        self.past: Any = None
        self.steps = 0

    def first(self) -> Tensor:
        out = self.lm(self.embeds, self.prompt.attention(), self.positions, use_cache=self.use_cache)
        self.past = out.past_key_values if self.use_cache else None
        return out.logits[:, -1]

    def next(self, embeds: Tensor, positions: Tensor) -> Tensor:
        self.steps += 1
        self.keys = torch.cat([self.keys, torch.ones_like(self.keys[:, :1])], dim=1)
        if self.use_cache:
            out = self.lm(embeds, self.keys, positions, past_key_values=self.past, use_cache=True)
            self.past = out.past_key_values
        else:
            self.embeds = torch.cat([self.embeds, embeds], dim=1)
            self.positions = torch.cat([self.positions, positions], dim=1)
            out = self.lm(self.embeds, self.prompt.attention(extra=self.steps), self.positions)
        return out.logits[:, -1]


@torch.no_grad()
def greedy_generate(
    lm: CausalLM,
    prompt: FusedInputs,
    max_new_tokens: int,
    use_cache: bool = True,
    profiler: StageProfiler | None = None,
    stepper: Stepper | None = None,
    stop_at_eos: bool = True,
) -> Tensor:
    """Left-padded fused prompt (B, L, D) -> generated ids (B, max_new_tokens); after EOS a row emits pad.

    Positions come from the attention mask, so the tokens a row gets do not depend on the rest of the batch.
    ``stop_at_eos=False`` runs all ``max_new_tokens`` steps whatever is emitted (a fixed-length decode, for
    measuring decode speed when answers end after a token or two).
    """
    stepper = stepper if stepper is not None else PlainStepper(lm, prompt, use_cache)
    eos = lm.text_tokenizer.eos_token_id
    pad = lm.text_tokenizer.pad_token_id if lm.text_tokenizer.pad_token_id is not None else 0
    done = torch.zeros(prompt.inputs_embeds.shape[0], dtype=torch.bool, device=prompt.inputs_embeds.device)
    last_position = prompt.position_ids[:, -1:]
    generated: list[Tensor] = []
    for step in range(max_new_tokens):
        with stage(profiler, "prefill" if step == 0 else "decode"):
            logits = stepper.first() if step == 0 else stepper.next(lm.embed(generated[-1][:, None]), last_position)
            next_ids = logits.argmax(-1).masked_fill(done, pad)  # (B,)
        generated.append(next_ids)
        if stop_at_eos:
            done |= next_ids == eos
        if bool(done.all()):
            break
        last_position = last_position + 1
    ids = torch.stack(generated, dim=1)
    if ids.shape[1] < max_new_tokens:
        ids = torch.nn.functional.pad(ids, (0, max_new_tokens - ids.shape[1]), value=pad)
    return ids
