"""Visual tokenizers (global, patch pooling, objects, query compression, selection, merging) and budget schedules."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
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

EXPORTS = {
    "CLSAttentionSelector": "attention_select",
    "BudgetSchedule": "base",
    "FixedBudget": "base",
    "TokenizerFactory": "base",
    "VisualTokenizer": "base",
    "AverageOverBudgets": "budget_schedules",
    "SampledBudget": "budget_schedules",
    "CompressionTokens": "compression_tokens",
    "GlobalTokenizer": "global_token",
    "MatryoshkaPoolTokenizer": "matryoshka_pool",
    "MaskedPoolEmbedding": "object_embedding",
    "MaskInversionEmbedding": "object_embedding",
    "ObjectEmbedding": "object_embedding",
    "ObjectTokenizer": "objects",
    "PatchPoolTokenizer": "patch_pool",
    "MatryoshkaQueryTransformer": "queries",
    "QueryCompressor": "queries",
    "VisionZipTokenizer": "visionzip",
}
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
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
