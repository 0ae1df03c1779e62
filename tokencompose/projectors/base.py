"""Projectors map visual tokens into the LLM's width; they are built from widths the model reads off its parts."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch import Tensor, nn


class Projector(L.LightningModule):
    """(..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim


# What recipes give: the projector class with its own options; the model supplies (in_dim, out_dim).
ProjectorFactory = Callable[[int, int], Projector]


class LinearProjector(Projector):
    """One linear layer (``bias=False`` for a projector without bias)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__(in_dim, out_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.linear(tokens)


class MLPProjector(Projector):
    """``depth`` linear layers with GELU between them; depth 2 is LLaVA-1.5's ``mlp2x_gelu``."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2) -> None:
        super().__init__(in_dim, out_dim)
        if depth < 1:
            raise ValueError(f"MLPProjector: depth={depth}; must be >= 1")
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*layers)

    def forward(self, tokens: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.layers(tokens)
