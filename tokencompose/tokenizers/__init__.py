"""Visual tokenizers: global (CLS), patch pooling, object tokens."""

from tokencompose.tokenizers.attention_select import CLSAttentionSelector
from tokencompose.tokenizers.base import VisualTokenizer
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

__all__ = [
    "CLSAttentionSelector",
    "CompressionTokens",
    "MatryoshkaPoolTokenizer",
    "MatryoshkaQueryTransformer",
    "QueryCompressor",
    "GlobalTokenizer",
    "MaskInversionEmbedding",
    "MaskedPoolEmbedding",
    "ObjectEmbedding",
    "ObjectTokenizer",
    "PatchPoolTokenizer",
    "VisualTokenizer",
]
