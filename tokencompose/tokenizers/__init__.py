"""Visual tokenizers: global (CLS), patch pooling, object tokens."""

from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.tokenizers.global_token import GlobalTokenizer
from tokencompose.tokenizers.object_embedding import (
    MaskedPoolEmbedding,
    MaskInversionEmbedding,
    ObjectEmbedding,
)
from tokencompose.tokenizers.objects import ObjectTokenizer
from tokencompose.tokenizers.patch_pool import PatchPoolTokenizer

__all__ = [
    "GlobalTokenizer",
    "MaskInversionEmbedding",
    "MaskedPoolEmbedding",
    "ObjectEmbedding",
    "ObjectTokenizer",
    "PatchPoolTokenizer",
    "VisualTokenizer",
]
