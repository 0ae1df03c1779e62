"""Loading text tokenizers for recipes (functions, so recipes can name them as a ``class_path``)."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.tokenization_utils_sentencepiece import SPIECE_UNDERLINE, SentencePieceBackend

from tokencompose.hub import from_pretrained
from tokencompose.model_configs import in_meta_build, stand_in_text_tokenizer


def _with_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def load_text_tokenizer(
    name_or_path: str, use_fast: bool = True, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """A Hugging Face tokenizer by hub name or local path, with a pad token (LLaVA pads with ``unk``).

    Under transformers 5 a Llama folder loads as the ``tokenizers`` BPE even with ``use_fast=False``; for the
    SentencePiece tokenizer LLaVA trained with, use ``load_sentencepiece_llama_tokenizer``. Inside
    ``model_configs.meta_build()``: ``stand_in_text_tokenizer(name_or_path)`` (the published size and special ids).
    """
    if in_meta_build():
        return _with_pad(stand_in_text_tokenizer(name_or_path))
    tokenizer = from_pretrained("load_text_tokenizer", name_or_path, AutoTokenizer.from_pretrained, use_fast=use_fast,
                                trust_remote_code=trust_remote_code)
    return _with_pad(tokenizer)


class SentencePieceLlamaTokenizer(SentencePieceBackend):
    """Llama's SentencePiece ("slow") tokenizer, which LLaVA trained with (``use_fast=False``).

    The behaviour of transformers 4.x ``LlamaTokenizer`` (huggingface/transformers
    ``src/transformers/models/llama/tokenization_llama.py``, ``tokenize``/``_tokenize``): every text gets a
    prefix ``▁`` unless it begins with a special token; with ``legacy=False`` SentencePiece's own dummy prefix is
    off, so text right after a special token (``</s>USER``) gets none. transformers 5 ships Llama's tokenizer
    only as a ``tokenizers`` BPE, which gives the same tokens except at the start of a text beginning with a
    space: ``" ASSISTANT"`` is ``▁ASSISTANT`` there and ``▁ ▁ASSISTANT`` here, as after an ``<image>`` that a space
    follows. Needs ``sentencepiece`` (and ``protobuf`` for ``legacy=False``, as Vicuna v1.5's config sets).
    """

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        legacy: bool | None = None,
        add_prefix_space: bool = True,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        **kwargs,
    ) -> None:
        patterns = {(True, False): "bos", (True, True): "bos_eos", (False, True): "eos", (False, False): "none"}
        kwargs.setdefault("special_tokens_pattern", patterns[(add_bos_token, add_eos_token)])
        self.add_prefix_space = add_prefix_space
        legacy = True if legacy is None else legacy  # transformers 4.x's default when the config does not say
        super().__init__(vocab_file=vocab_file, legacy=legacy, add_prefix_space=add_prefix_space, **kwargs)

    def tokenize(self, text: str, **kwargs) -> list[str]:
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        text = text.replace(SPIECE_UNDERLINE, " ")
        if self.add_prefix_space:
            text = SPIECE_UNDERLINE + text
        tokens = super().tokenize(text, **kwargs)
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            tokens = tokens[1:]  # a text that begins with a special token gets no prefix
        return tokens

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """SentencePiece decodes each run between special tokens (byte-fallback pieces, ``▁``); the prefix that
        ``tokenize`` added is dropped, and special tokens are written as they are (4.x spacing)."""
        tokens = list(tokens)
        if tokens and self.add_prefix_space and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens[0] = tokens[0][1:]
        special = set(self.all_special_tokens)
        out, run, after_special = "", [], False
        for i, token in enumerate(tokens):
            if token in special:
                if self.legacy and not after_special and i > 0:
                    out += " "
                out, run, after_special = out + self.sp_model.decode(run) + token, [], True
            else:
                if after_special and i == 1 and self.add_prefix_space and not token.startswith(SPIECE_UNDERLINE):
                    out += " "
                run.append(token)
                after_special = False
        return out + self.sp_model.decode(run)


def load_sentencepiece_llama_tokenizer(name_or_path: str) -> SentencePieceLlamaTokenizer:
    """``SentencePieceLlamaTokenizer`` from a folder with ``tokenizer.model`` (and ``tokenizer_config.json``:
    ``legacy``, special tokens), with a pad token (LLaVA pads with ``unk``); inside ``meta_build()`` the stand-in."""
    if in_meta_build():
        return _with_pad(stand_in_text_tokenizer(name_or_path))
    return _with_pad(from_pretrained("load_sentencepiece_llama_tokenizer", name_or_path,
                                     SentencePieceLlamaTokenizer.from_pretrained))
