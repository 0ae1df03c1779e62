"""The LLM side: adapter over transformers causal LMs, chat templates, conversation encoding, fusion, decoding."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
    from tokencompose.llm.attention import HideBehindStream
    from tokencompose.llm.base import (
        AttentionPolicy,
        CausalAttention,
        DecodingPolicy,
        NoTextFusion,
        PlainDecoding,
        Stepper,
        TextFusion,
    )
    from tokencompose.llm.causal_lm import CausalLM, LoraSettings, causal_lm_loss
    from tokencompose.llm.conversation import (
        IGNORE_INDEX,
        IMAGE_TOKEN_ID,
        ConversationEncoder,
        EncodedConversation,
        SequenceTooLong,
    )
    from tokencompose.llm.fastv import FastV
    from tokencompose.llm.fitprune import FitPrune
    from tokencompose.llm.fusion import FusedInputs, fuse_visual_tokens
    from tokencompose.llm.generation import greedy_generate
    from tokencompose.llm.layers import DecoderStack
    from tokencompose.llm.prefusion import ModalityPreFusion
    from tokencompose.llm.sparsevlm import SparseVLM
    from tokencompose.llm.templates import (
        ChatTemplate,
        HFChatTemplate,
        PlainTemplate,
        Segment,
        TemplateMismatch,
        VicunaV1Template,
    )
    from tokencompose.llm.text_tokenizer import load_text_tokenizer

EXPORTS = {
    "HideBehindStream": "attention",
    "AttentionPolicy": "base",
    "CausalAttention": "base",
    "DecodingPolicy": "base",
    "NoTextFusion": "base",
    "PlainDecoding": "base",
    "Stepper": "base",
    "TextFusion": "base",
    "CausalLM": "causal_lm",
    "LoraSettings": "causal_lm",
    "causal_lm_loss": "causal_lm",
    "IGNORE_INDEX": "conversation",
    "IMAGE_TOKEN_ID": "conversation",
    "ConversationEncoder": "conversation",
    "EncodedConversation": "conversation",
    "SequenceTooLong": "conversation",
    "FastV": "fastv",
    "FitPrune": "fitprune",
    "FusedInputs": "fusion",
    "fuse_visual_tokens": "fusion",
    "greedy_generate": "generation",
    "DecoderStack": "layers",
    "ModalityPreFusion": "prefusion",
    "SparseVLM": "sparsevlm",
    "ChatTemplate": "templates",
    "HFChatTemplate": "templates",
    "PlainTemplate": "templates",
    "Segment": "templates",
    "TemplateMismatch": "templates",
    "VicunaV1Template": "templates",
    "load_text_tokenizer": "text_tokenizer",
}
__all__ = [
    "AttentionPolicy",
    "CausalAttention",
    "CausalLM",
    "ChatTemplate",
    "ConversationEncoder",
    "DecoderStack",
    "DecodingPolicy",
    "EncodedConversation",
    "FastV",
    "FitPrune",
    "FusedInputs",
    "HFChatTemplate",
    "HideBehindStream",
    "IGNORE_INDEX",
    "IMAGE_TOKEN_ID",
    "LoraSettings",
    "ModalityPreFusion",
    "NoTextFusion",
    "PlainDecoding",
    "PlainTemplate",
    "Segment",
    "SequenceTooLong",
    "SparseVLM",
    "Stepper",
    "TemplateMismatch",
    "TextFusion",
    "VicunaV1Template",
    "causal_lm_loss",
    "fuse_visual_tokens",
    "greedy_generate",
    "load_text_tokenizer",
]
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
