"""Greedy decoding over fused embeddings, with or without a KV cache (the two give the same tokens)."""

from __future__ import annotations

import torch
from torch import Tensor

from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.fusion import FusedInputs
from tokencompose.profiling import StageProfiler, stage


@torch.no_grad()
def greedy_generate(
    lm: CausalLM, prompt: FusedInputs, max_new_tokens: int, use_cache: bool = True, profiler: StageProfiler | None = None
) -> Tensor:
    """Left-padded fused prompt (B, L, D) -> generated ids (B, max_new_tokens); after EOS a row emits pad.

    Positions come from the attention mask, so the tokens a row gets do not depend on the rest of the batch.
    """
    eos = lm.text_tokenizer.eos_token_id
    pad = lm.text_tokenizer.pad_token_id if lm.text_tokenizer.pad_token_id is not None else 0
    embeds, positions = prompt.inputs_embeds, prompt.position_ids
    mask = prompt.attention()  # (B, L), or (B, 1, L, L) when a summary hides the image (VoCo-LLaMA)
    keys = prompt.key_mask()  # what every new token may attend to
    batch = embeds.shape[0]
    done = torch.zeros(batch, dtype=torch.bool, device=embeds.device)
    generated: list[Tensor] = []
    past = None
    step_embeds, step_positions = embeds, positions
    for step in range(max_new_tokens):
        with stage(profiler, "prefill" if step == 0 else "decode"):
            out = lm(step_embeds, mask, step_positions, past_key_values=past, use_cache=use_cache)
            next_ids = out.logits[:, -1].argmax(-1)  # (B,)
        next_ids = next_ids.masked_fill(done, pad)
        generated.append(next_ids)
        done |= next_ids == eos
        if bool(done.all()):
            break
        next_embeds = lm.embed(next_ids[:, None])  # (B, 1, D)
        next_positions = positions[:, -1:] + 1
        keys = torch.cat([keys, torch.ones_like(keys[:, :1])], dim=1)
        positions = torch.cat([positions, next_positions], dim=1)
        if use_cache:
            past = out.past_key_values
            step_embeds, step_positions, mask = next_embeds, next_positions, keys
        else:
            embeds = torch.cat([embeds, next_embeds], dim=1)
            step_embeds, step_positions, mask = embeds, positions, prompt.attention(extra=step + 1)
    ids = torch.stack(generated, dim=1)
    if ids.shape[1] < max_new_tokens:
        ids = torch.nn.functional.pad(ids, (0, max_new_tokens - ids.shape[1]), value=pad)
    return ids
