"""Scalers: harmonise the statistics of CLS/object tokens with the patch tokens before projection."""

from tokencompose.scalers.base import NoScaler, StreamScaler, masked_moments
from tokencompose.scalers.dataset_stats import DatasetStatsScaler
from tokencompose.scalers.per_image import L2NormScaler, MeanStdScaler

__all__ = ["DatasetStatsScaler", "L2NormScaler", "MeanStdScaler", "NoScaler", "StreamScaler", "masked_moments"]
