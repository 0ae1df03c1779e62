"""Composition of the named token streams into one visual sequence, in the order the streams are listed."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import TokenStream, VisualSequence


def compose_streams(
    streams: dict[str, TokenStream], projectors: nn.ModuleDict, shared: bool, tokenizers: Mapping[str, VisualTokenizer]
) -> VisualSequence:
    """dict[name, TokenStream (B, N_i, D_i)] -> VisualSequence (B, sum M_i, D_llm), streams in dict order.

    Each stream passes its projector (the shared one, or its own) the way its tokenizer says
    (``VisualTokenizer.project``): token by token, or — M3 — every patch projected and then pooled to M_i.
    """
    names = tuple(streams)
    if shared and not any(tokenizers[n].reduces_after_projection for n in names):
        # one call over the concatenated streams, as LLaVA projects [CLS; patches] (same bf16 numerics)
        joined = projectors["shared"](torch.cat([streams[n].tokens for n in names], dim=1))
        sizes = [streams[n].tokens.shape[1] for n in names]
        projected = {n: streams[n].replace(t) for n, t in zip(names, joined.split(sizes, dim=1), strict=True)}
    else:
        projected = {n: tokenizers[n].project(streams[n], projectors["shared" if shared else n]) for n in names}
    kind = torch.cat(
        [torch.full((projected[n].tokens.shape[1],), i, dtype=torch.long) for i, n in enumerate(names)]
    )
    valid = torch.cat([projected[n].valid for n in names], dim=1)  # (B, M)
    tokens = torch.cat([projected[n].tokens for n in names], dim=1)  # (B, M, D_llm)
    return VisualSequence(tokens=tokens, valid=valid, kind=kind.to(tokens.device), kinds=names)
