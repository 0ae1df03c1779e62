"""Helpers for the tests of the policies that prune visual tokens inside the LLM (FastV, FitPrune)."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from tokencompose.llm import FusedInputs, PlainDecoding


def sharpen(model, factor=8.0):
    """Scale the queries and keys so that attention is peaked: at random initialisation it is nearly uniform,
    and any rule would then delete by position alone."""
    with torch.no_grad():
        for layer in model.llm.model.model.layers:
            layer.self_attn.q_proj.weight.mul_(factor)
            layer.self_attn.k_proj.weight.mul_(factor)
    return model


def one_row(prompt, row):
    """Row ``row`` of a left-padded prompt on its own, without padding."""
    valid = prompt.attention_mask[row].bool()
    return FusedInputs(prompt.inputs_embeds[row, valid][None], prompt.attention_mask[row, valid][None],
                       prompt.position_ids[row, valid][None], None, visual_kind=prompt.visual_kind[row, valid][None])


def assert_no_pruning_is_plain(model, make_batch):
    """A pruning policy set to keep everything: its first logits = the plain LLM's on the same prompt, and its
    greedy answers = plain decoding's. Returns the prompt and the plain logits (B, V) for further checks."""
    policy, batch = model.decoding, make_batch(model, count=3)
    prompt = model.fuse(batch, for_generation=True)
    plain = model.llm(prompt.inputs_embeds, prompt.attention(), prompt.position_ids).logits[:, -1]
    assert_close(policy.stepper(model.llm, prompt, use_cache=True).first(), plain, atol=1e-5, rtol=1e-4)
    pruned, model.decoding = model.generate(batch, max_new_tokens=4), PlainDecoding()
    assert pruned == model.generate(batch, max_new_tokens=4)
    model.decoding = policy
    return prompt, plain
