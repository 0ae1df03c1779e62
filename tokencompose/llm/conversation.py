"""Conversation -> token ids and labels, with the image placeholder and the sequence-length guard."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tokencompose.llm.templates import IMAGE_PLACEHOLDER, ChatTemplate

IMAGE_TOKEN_ID = -200  # LLaVA's sentinel; never an embedding row — fusion replaces it with visual tokens
IGNORE_INDEX = -100


class SequenceTooLong(ValueError):
    """The visual tokens alone (or with the prompt) do not fit in ``max_length``."""


@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]


@dataclass
class ConversationEncoder:
    """Tokenises conversations for a model: one ``IMAGE_TOKEN_ID`` per image, labels -100 off target.

    ``visual_tokens_per_image`` is how many positions each placeholder expands to inside the model; the guard
    keeps the expanded length within ``max_length`` by cutting text from the end, never visual tokens.
    """

    text_tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    max_length: int
    visual_tokens_per_image: int

    def __post_init__(self) -> None:
        # The same segments recur in every sample (the system prompt above all): tokenise each text once.
        self._tokenize = functools.lru_cache(maxsize=4096)(self._tokenize_uncached)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_tokenize"]  # a per-instance cache: rebuilt after unpickling (spawned loader workers)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def _tokenize_uncached(self, text: str) -> tuple[int, ...]:
        ids: list[int] = []
        for i, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if i > 0:
                ids.append(IMAGE_TOKEN_ID)
            if piece:
                ids.extend(self.text_tokenizer(piece, add_special_tokens=False).input_ids)
        return tuple(ids)

    def encode(self, conversation: list[dict[str, str]], add_generation_prompt: bool = False) -> EncodedConversation:
        """Conversation -> ids and labels; with ``add_generation_prompt`` the last answer is left out."""
        input_ids: list[int] = []
        labels: list[int] = []
        bos = self.text_tokenizer.bos_token_id
        if self.template.add_bos and bos is not None:
            input_ids.append(bos)
            labels.append(IGNORE_INDEX)
        for segment in self.template.segments(conversation, self.text_tokenizer, add_generation_prompt):
            ids = self._tokenize(segment.text)
            input_ids += ids
            labels += [i if segment.is_target and i != IMAGE_TOKEN_ID else IGNORE_INDEX for i in ids]
        return self._fit(EncodedConversation(input_ids, labels))

    def encode_with_prompt(self, conversation: list[dict[str, str]]) -> tuple[EncodedConversation, EncodedConversation]:
        """(training ids and labels, generation prompt) from one tokenisation.

        The prompt is everything before the last answer, which is what ``add_generation_prompt`` renders for a
        conversation that ends with an answer (tested for every template).
        """
        full = self.encode(conversation)
        if conversation[-1].get("from") != "gpt":
            return full, full
        last_answer = len(full.labels)
        while last_answer > 0 and full.labels[last_answer - 1] != IGNORE_INDEX:
            last_answer -= 1
        prompt = full.input_ids[:last_answer]
        return full, EncodedConversation(prompt, [IGNORE_INDEX] * len(prompt))

    def expanded_length(self, input_ids: list[int]) -> int:
        images = input_ids.count(IMAGE_TOKEN_ID)
        return len(input_ids) + images * (self.visual_tokens_per_image - 1)

    def _fit(self, encoded: EncodedConversation) -> EncodedConversation:
        overflow = self.expanded_length(encoded.input_ids) - self.max_length
        if overflow <= 0:
            return encoded
        keep = max(0, len(encoded.input_ids) - overflow)
        if IMAGE_TOKEN_ID in encoded.input_ids[keep:]:
            raise SequenceTooLong(
                f"an image placeholder would be cut: {self.expanded_length(encoded.input_ids)} positions after "
                f"expanding images to {self.visual_tokens_per_image} tokens, max_length={self.max_length}"
            )
        return EncodedConversation(encoded.input_ids[:keep], encoded.labels[:keep])
