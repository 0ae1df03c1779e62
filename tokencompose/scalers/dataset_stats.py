"""Dataset-level statistics: running means of each stream's mean and std, accumulated in training, frozen after."""

from __future__ import annotations

import torch
from torch import Tensor

from tokencompose.scalers.base import StreamScaler, masked_moments
from tokencompose.types import TokenStream


class DatasetStatsScaler(StreamScaler):
    """t' = (t - mu_T) / sigma_T * sigma_P + mu_P with dataset-level scalars per stream.

    The statistics are cumulative averages over training batches (buffers, so they are checkpointed); in eval
    mode (validation, test, predict) and after ``fit`` they are frozen.

    Args:
        reference: the stream whose statistics the targets take on.
        targets: the streams to rescale (needed up front: each gets its own buffers).
    """

    def __init__(self, reference: str = "patch", targets: list[str] | None = None) -> None:
        if not targets:
            raise ValueError("DatasetStatsScaler: `targets` must name the streams to rescale, e.g. ['cls', 'objects']")
        super().__init__(reference=reference, targets=targets)
        for name in [reference, *targets]:
            # [mean, std, number of batches seen]
            self.register_buffer(self._key(name), torch.tensor([0.0, 1.0, 0.0]))

    @staticmethod
    def _key(name: str) -> str:
        return f"stats_{name}"

    def statistics(self, name: str) -> tuple[Tensor, Tensor]:
        stats = getattr(self, self._key(name))
        return stats[0], stats[1]

    @torch.no_grad()
    def _update(self, name: str, stream: TokenStream) -> None:
        if not stream.valid.any():
            return
        mean, std = masked_moments(stream.tokens.float(), stream.valid)
        has_tokens = stream.valid.any(1)
        if not (torch.isfinite(mean[has_tokens]).all() and torch.isfinite(std[has_tokens]).all()):
            return  # a non-finite batch is skipped by the training step; it must not poison the running statistics
        stats = getattr(self, self._key(name))
        seen = stats[2] + 1
        stats[0] += (mean[has_tokens].mean() - stats[0]) / seen
        stats[1] += (std[has_tokens].mean() - stats[1]) / seen
        stats[2] = seen

    def forward(self, streams: dict[str, TokenStream]) -> dict[str, TokenStream]:
        if self.training:
            for name in [self.reference, *self.targets]:
                self._update(name, streams[name])
        return super().forward(streams)

    def rescale(self, name: str, stream: TokenStream, reference: TokenStream) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        mean_t, std_t = self.statistics(name)
        mean_p, std_p = self.statistics(self.reference)
        return (stream.tokens - mean_t) / std_t.clamp(min=1e-6) * std_p + mean_p
