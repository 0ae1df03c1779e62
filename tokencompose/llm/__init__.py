"""The LLM side: adapter over transformers causal LMs, chat templates, conversation encoding, fusion, decoding."""

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
from tokencompose.llm.templates import (
    ChatTemplate,
    HFChatTemplate,
    PlainTemplate,
    Segment,
    TemplateMismatch,
    VicunaV1Template,
)
from tokencompose.llm.text_tokenizer import load_text_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN_ID",
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
    "LoraSettings",
    "ModalityPreFusion",
    "NoTextFusion",
    "PlainDecoding",
    "PlainTemplate",
    "Segment",
    "SequenceTooLong",
    "Stepper",
    "TemplateMismatch",
    "TextFusion",
    "VicunaV1Template",
    "causal_lm_loss",
    "fuse_visual_tokens",
    "greedy_generate",
    "load_text_tokenizer",
]
