"""Projectors map visual tokens into the LLM's width; they are built from widths the model reads off its parts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn


class Projector(L.LightningModule):
    """(..., in_dim) -> (..., out_dim)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim


# What recipes give: the projector class with its own options; the model supplies (in_dim, out_dim).
ProjectorFactory = Callable[[int, int], Projector]


class QuickGELU(nn.Module):
    """CLIP's sigmoid approximation of GELU, ``x * sigmoid(1.702 x)`` (openai/CLIP ``clip/model.py``)."""

    def forward(self, x: Tensor) -> Tensor:
        """(...) -> (...)."""
        return x * torch.sigmoid(1.702 * x)


# The activations between MLP layers, named as Hugging Face's ``ACT2FN`` names them (``projector_hidden_act``).
Activation = Literal["gelu", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu"]
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,  # exact (erf) GELU, LLaVA-1.5's mlp2x_gelu
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


class LinearProjector(Projector):
    """One linear layer (``bias=False`` for a projector without bias)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__(in_dim, out_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.linear(tokens)


class MLPProjector(Projector):
    """``depth`` linear layers with ``activation`` between them; depth 2 with GELU is LLaVA-1.5's ``mlp2x_gelu``.

    Args:
        depth: number of linear layers (>= 1).
        bias: whether the linear layers have a bias (Hugging Face LLaVA's ``multimodal_projector_bias``).
        activation: the nonlinearity between layers, by its Hugging Face name (``projector_hidden_act``).
    """

    def __init__(
        self, in_dim: int, out_dim: int, depth: int = 2, bias: bool = True, activation: Activation = "gelu"
    ) -> None:
        super().__init__(in_dim, out_dim)
        if depth < 1:
            raise ValueError(f"MLPProjector: depth={depth}; must be >= 1")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLPProjector: activation={activation!r}; allowed: {sorted(ACTIVATIONS)}")
        self.bias = bias
        self.activation = activation
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=bias)]
        for _ in range(depth - 1):
            layers += [ACTIVATIONS[activation](), nn.Linear(out_dim, out_dim, bias=bias)]
        self.layers = nn.Sequential(*layers)

    def forward(self, tokens: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.layers(tokens)
