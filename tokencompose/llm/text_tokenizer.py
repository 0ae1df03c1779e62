"""Loading text tokenizers for recipes (a function, so recipes can name it as a ``class_path``)."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase


def load_text_tokenizer(
    name_or_path: str, use_fast: bool = True, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """A Hugging Face tokenizer by hub name or local path, with a pad token (LLaVA pads with ``unk``)."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=use_fast, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer
