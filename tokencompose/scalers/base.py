"""The scaler interface: rescale some token streams to the statistics of a reference stream."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

import lightning as L
from torch import Tensor

from tokencompose.parts import Checks, Parts
from tokencompose.types import TokenStream


def masked_moments(tokens: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std over all elements of the valid tokens of each image: (B, N, D), (B, N) -> (B,), (B,)."""
    weight = valid[..., None].to(tokens.dtype)  # (B, N, 1)
    count = (weight.sum((1, 2)) * tokens.shape[-1]).clamp(min=1.0)  # (B,)
    mean = (tokens * weight).sum((1, 2)) / count
    var = (((tokens - mean[:, None, None]) ** 2) * weight).sum((1, 2)) / count
    return mean, var.sqrt()


class StreamScaler(L.LightningModule, Checks):
    """Rescales the ``targets`` streams (default: every stream but the reference) towards ``reference``.

    forward: dict[name, TokenStream(tokens (B, N, D), valid (B, N))] -> the same dict, targets rescaled.
    """

    def __init__(self, reference: str = "patch", targets: list[str] | None = None) -> None:
        super().__init__()
        self.reference = reference
        self.targets = targets

    def problems(self, parts: Parts) -> list[str]:
        """The reference and every target must be streams of the model."""
        missing = [n for n in [self.reference, *(self.targets or [])] if n not in parts.tokenizers]
        if not missing:
            return []
        return [f"stream(s) {missing} not found; the model's tokenizers are {parts.streams} (set `reference` / "
                "`targets` to those keys)"]

    def target_names(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n != self.reference] if self.targets is None else list(self.targets)

    def forward(self, streams: dict[str, TokenStream]) -> dict[str, TokenStream]:
        """dict[name, TokenStream] -> dict[name, TokenStream] with each target stream rescaled."""
        reference = streams[self.reference]
        out = dict(streams)
        for name in self.target_names(streams):
            stream = streams[name]
            scaled = self.rescale(name, stream, reference) * stream.valid[..., None]
            out[name] = stream.replace(scaled)
        return out

    @abstractmethod
    def rescale(self, name: str, stream: TokenStream, reference: TokenStream) -> Tensor:
        """(B, N, D) target tokens -> (B, N, D) rescaled tokens."""


class NoScaler(StreamScaler):
    """Leaves every stream as it is."""

    def forward(self, streams: dict[str, TokenStream]) -> dict[str, TokenStream]:
        return streams

    def problems(self, parts: Parts) -> list[str]:
        return []

    def rescale(self, name: str, stream: TokenStream, reference: TokenStream) -> Tensor:
        return stream.tokens


def per_token_standardise(tokens: Tensor, eps: float = 1e-6) -> Tensor:
    """Zero mean, unit std over the width of each token: (B, N, D) -> (B, N, D)."""
    mean = tokens.mean(-1, keepdim=True)
    std = tokens.std(-1, unbiased=False, keepdim=True)
    return (tokens - mean) / (std + eps)


