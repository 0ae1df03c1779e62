"""Per-image scalers: match each target token to the statistics of the same image's reference tokens.

Statistics of a target are taken per token (not over the stream) so that dropping some object tokens at test
time leaves the remaining tokens unchanged.
"""

from __future__ import annotations

from torch import Tensor

from tokencompose.scalers.base import StreamScaler, masked_moments, per_token_standardise
from tokencompose.types import TokenStream


class MeanStdScaler(StreamScaler):
    """t' = (t - mean(t)) / std(t) * std(P) + mean(P); P = the image's valid reference tokens (Mask-LLaVA's best)."""

    def rescale(self, name: str, stream: TokenStream, reference: TokenStream) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        ref_mean, ref_std = masked_moments(reference.tokens, reference.valid)  # (B,), (B,)
        return per_token_standardise(stream.tokens) * ref_std[:, None, None] + ref_mean[:, None, None]


class L2NormScaler(StreamScaler):
    """t' = t * mean_i ||p_i|| / ||t||: each target token gets the image's mean reference-token norm."""

    def rescale(self, name: str, stream: TokenStream, reference: TokenStream) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        ref_norms = reference.tokens.norm(dim=-1) * reference.valid  # (B, N_ref)
        target_norm = ref_norms.sum(1) / reference.valid.sum(1).clamp(min=1)  # (B,)
        norms = stream.tokens.norm(dim=-1, keepdim=True).clamp(min=1e-6)  # (B, N, 1)
        return stream.tokens / norms * target_norm[:, None, None]
