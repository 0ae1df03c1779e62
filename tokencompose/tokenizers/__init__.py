"""Visual tokenizers (global, patch pooling, objects, query compression, selection, merging) and budget schedules."""

from tokencompose.tokenizers.attention_select import CLSAttentionSelector
from tokencompose.tokenizers.base import BudgetSchedule, FixedBudget, TokenizerFactory, VisualTokenizer
from tokencompose.tokenizers.budget_schedules import AverageOverBudgets, SampledBudget
from tokencompose.tokenizers.compression_tokens import CompressionTokens
from tokencompose.tokenizers.global_token import GlobalTokenizer
from tokencompose.tokenizers.matryoshka_pool import MatryoshkaPoolTokenizer
from tokencompose.tokenizers.object_embedding import (
    MaskedPoolEmbedding,
    MaskInversionEmbedding,
    ObjectEmbedding,
)
from tokencompose.tokenizers.objects import ObjectTokenizer
from tokencompose.tokenizers.patch_pool import PatchPoolTokenizer
from tokencompose.tokenizers.queries import MatryoshkaQueryTransformer, QueryCompressor
from tokencompose.tokenizers.visionzip import VisionZipTokenizer

__all__ = [
    "AverageOverBudgets",
    "BudgetSchedule",
    "CLSAttentionSelector",
    "CompressionTokens",
    "FixedBudget",
    "GlobalTokenizer",
    "MaskInversionEmbedding",
    "MaskedPoolEmbedding",
    "MatryoshkaPoolTokenizer",
    "MatryoshkaQueryTransformer",
    "ObjectEmbedding",
    "ObjectTokenizer",
    "PatchPoolTokenizer",
    "QueryCompressor",
    "SampledBudget",
    "TokenizerFactory",
    "VisionZipTokenizer",
    "VisualTokenizer",
]
