"""Composition of the named token streams into one visual sequence, in the order the streams are listed."""

from __future__ import annotations

import torch
from torch import nn

from tokencompose.types import TokenStream, VisualSequence


def compose_streams(streams: dict[str, TokenStream], projectors: nn.ModuleDict, shared: bool) -> VisualSequence:
    """dict[name, TokenStream (B, N_i, D_i)] -> VisualSequence (B, sum N_i, D_llm), streams in dict order.

    With a shared projector the streams are concatenated first and projected in one call.
    """
    names = tuple(streams)
    kind = torch.cat(
        [torch.full((streams[n].tokens.shape[1],), i, dtype=torch.long) for i, n in enumerate(names)]
    )
    valid = torch.cat([streams[n].valid for n in names], dim=1)  # (B, N)
    if shared:
        tokens = projectors["shared"](torch.cat([streams[n].tokens for n in names], dim=1))
    else:
        tokens = torch.cat([projectors[n](streams[n].tokens) for n in names], dim=1)
    return VisualSequence(tokens=tokens, valid=valid, kind=kind.to(tokens.device), kinds=names)
