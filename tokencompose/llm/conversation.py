"""Conversation -> token ids and labels, with the image placeholder and the sequence-length guard.

The template's segments are joined into the whole prompt and tokenised in one go, split only at ``<image>``
as LLaVA's ``tokenizer_image_token`` does (haotian-liu/LLaVA ``llava/mm_utils.py``): each text chunk is a
fresh tokenizer call, so text after a placeholder starts a new text (a SentencePiece tokenizer gives it a
prefix space) and text after ``</s>`` does not. A token is a target when its first character lies in a target
segment; on LLaVA's ``vicuna_v1`` and ``plain`` prompts this gives the labels of ``preprocess_v1`` and
``preprocess_plain`` (tests/llm/test_llava_parity.py), without their length arithmetic.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tokencompose.llm.templates import IMAGE_PLACEHOLDER, ChatTemplate, Segment

IMAGE_TOKEN_ID = -200  # LLaVA's sentinel; never an embedding row — fusion replaces it with visual tokens
IGNORE_INDEX = -100


class SequenceTooLong(ValueError):
    """The visual tokens alone (or with the prompt) do not fit in ``max_length``."""


@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]


def target_spans(segments: list[Segment]) -> tuple[str, list[tuple[int, int]]]:
    """Segments -> (the whole text, the [start, end) character spans of its target segments)."""
    spans: list[tuple[int, int]] = []
    position = 0
    for segment in segments:
        end = position + len(segment.text)
        if segment.is_target and end > position:
            if spans and spans[-1][1] == position:
                spans[-1] = (spans[-1][0], end)  # adjacent targets are one span
            else:
                spans.append((position, end))
        position = end
    return "".join(s.text for s in segments), spans


def _in_spans(position: int, spans: list[tuple[int, int]]) -> bool:
    i = bisect.bisect_right(spans, (position, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= position < spans[i][1]


@dataclass
class ConversationEncoder:
    """Tokenises conversations for a model: one ``IMAGE_TOKEN_ID`` per image, labels -100 off target.

    ``visual_tokens_per_image`` is how many positions each placeholder expands to inside the model; the guard
    keeps the expanded length within ``max_length`` by cutting text from the end, never visual tokens (LLaVA's
    ``tokenizer_model_max_length`` cut of the expanded sequence, refusing a cut through an image).
    """

    text_tokenizer: PreTrainedTokenizerBase
    template: ChatTemplate
    max_length: int
    visual_tokens_per_image: int

    def encode(self, conversation: list[dict[str, str]], add_generation_prompt: bool = False) -> EncodedConversation:
        """Conversation -> ids and labels; with ``add_generation_prompt`` the last answer is left out."""
        return self._fit(self._encode(conversation, add_generation_prompt))

    def encode_with_prompt(self, conversation: list[dict[str, str]]) -> tuple[EncodedConversation, EncodedConversation]:
        """(training ids and labels, generation prompt) from one tokenisation.

        The prompt is everything before the last answer, which is what ``add_generation_prompt`` renders for a
        conversation that ends with an answer (tested for every template).
        """
        full = self._encode(conversation)
        if conversation[-1].get("from") != "gpt":
            fitted = self._fit(full)
            return fitted, fitted
        last_answer = len(full.labels)
        while last_answer > 0 and full.labels[last_answer - 1] != IGNORE_INDEX:
            last_answer -= 1
        prompt = full.input_ids[:last_answer]
        return self._fit(full), self._fit(EncodedConversation(prompt, [IGNORE_INDEX] * len(prompt)))

    def expanded_length(self, input_ids: list[int]) -> int:
        images = input_ids.count(IMAGE_TOKEN_ID)
        return len(input_ids) + images * (self.visual_tokens_per_image - 1)

    def _encode(self, conversation: list[dict[str, str]], add_generation_prompt: bool = False) -> EncodedConversation:
        segments = self.template.segments(conversation, self.text_tokenizer, add_generation_prompt)
        text, spans = target_spans(segments)
        ids, starts = self._tokenize(text, sorted({p for span in spans for p in span}))
        input_ids: list[int] = []
        labels: list[int] = []
        bos = self.text_tokenizer.bos_token_id
        if self.template.add_bos and bos is not None:
            input_ids.append(bos)
            labels.append(IGNORE_INDEX)
        input_ids += ids
        labels += [i if i != IMAGE_TOKEN_ID and _in_spans(s, spans) else IGNORE_INDEX for i, s in zip(ids, starts, strict=True)]
        return EncodedConversation(input_ids, labels)

    def _tokenize(self, text: str, boundaries: list[int]) -> tuple[list[int], list[int]]:
        """Text -> (ids with ``IMAGE_TOKEN_ID`` per placeholder, each token's first character in ``text``).

        ``boundaries`` are the target spans' ends; tokenizers without offsets (Python ones) need them.
        """
        chunks = text.split(IMAGE_PLACEHOLDER)
        origins = [0]
        for chunk in chunks[:-1]:
            origins.append(origins[-1] + len(chunk) + len(IMAGE_PLACEHOLDER))
        if self.text_tokenizer.is_fast:
            encoded = self.text_tokenizer(chunks, add_special_tokens=False, return_offsets_mapping=True)
            per_chunk = [
                (chunk_ids, [origin + start for start, _ in offsets])
                for chunk_ids, offsets, origin in zip(encoded.input_ids, encoded.offset_mapping, origins, strict=True)
            ]
        else:
            per_chunk = [
                self._tokenize_by_prefixes(chunk, origin, boundaries)
                for chunk, origin in zip(chunks, origins, strict=True)
            ]
        ids: list[int] = []
        starts: list[int] = []
        for i, (chunk_ids, chunk_starts) in enumerate(per_chunk):
            if i > 0:
                ids.append(IMAGE_TOKEN_ID)
                starts.append(origins[i] - len(IMAGE_PLACEHOLDER))
            ids += chunk_ids
            starts += chunk_starts
        return ids, starts

    def _tokenize_by_prefixes(self, chunk: str, origin: int, boundaries: list[int]) -> tuple[list[int], list[int]]:
        """One chunk without offsets: the tokens of the text before each boundary must begin the chunk's tokens;
        each token is placed at the last boundary whose prefix it follows."""
        ids = self.text_tokenizer(chunk, add_special_tokens=False).input_ids if chunk else []
        starts = [origin] * len(ids)
        for boundary in boundaries:
            if not origin < boundary < origin + len(chunk):
                continue
            head = self.text_tokenizer(chunk[: boundary - origin], add_special_tokens=False).input_ids
            if ids[: len(head)] != head:
                raise ValueError(
                    f"{type(self.template).__name__}: the text before character {boundary} does not tokenise to a "
                    f"prefix of the whole chunk's tokens, so the label boundary there is ambiguous: "
                    f"{chunk[max(0, boundary - origin - 20) : boundary - origin + 20]!r}"
                )
            starts[len(head) :] = [boundary] * (len(ids) - len(head))
        return ids, starts

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
