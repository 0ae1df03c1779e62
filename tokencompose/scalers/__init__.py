"""Scalers: harmonise the statistics of CLS/object tokens with the patch tokens before projection."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
    from tokencompose.scalers.base import NoScaler, StreamScaler, masked_moments
    from tokencompose.scalers.dataset_stats import DatasetStatsScaler
    from tokencompose.scalers.per_image import L2NormScaler, MeanStdScaler

EXPORTS = {
    "NoScaler": "base",
    "StreamScaler": "base",
    "masked_moments": "base",
    "DatasetStatsScaler": "dataset_stats",
    "L2NormScaler": "per_image",
    "MeanStdScaler": "per_image",
}
__all__ = [
    "DatasetStatsScaler",
    "L2NormScaler",
    "MeanStdScaler",
    "NoScaler",
    "StreamScaler",
    "masked_moments",
]
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
