"""Helpers for the tests of the policies that prune visual tokens inside the LLM (FastV, FitPrune)."""

from __future__ import annotations

import torch

from tokencompose.llm import FusedInputs


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
