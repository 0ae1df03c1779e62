"""Chat templates: a conversation becomes text segments, each marked as a training target or not.

A conversation is LLaVA's format: ``[{"from": "human" | "gpt", "value": str}, ...]`` with ``<image>`` in the
text where the image goes. The segments joined are the whole prompt; ``conversation.py`` tokenises it in one go
(as LLaVA does) and a token is a target when its first character lies in a target segment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

IMAGE_PLACEHOLDER = "<image>"
HUMAN, ASSISTANT = "human", "gpt"


@dataclass(frozen=True)
class Segment:
    text: str
    is_target: bool


class TemplateMismatch(ValueError):
    """This template cannot render this conversation (e.g. ``plain`` needs one image and one answer); the data
    pipeline skips and counts such a sample."""


def prompt_turns(conversation: list[dict[str, str]], add_generation_prompt: bool) -> list[dict[str, str]]:
    """The turns to render: for a generation prompt, a final answer is left out (the model writes it)."""
    if add_generation_prompt and len(conversation) % 2 == 0:
        return conversation[:-1]
    return conversation


def check_conversation(conversation: list[dict[str, str]]) -> None:
    """Raise ValueError if the turns are not human/gpt alternating, starting with human."""
    if not conversation:
        raise ValueError("conversation is empty")
    for i, turn in enumerate(conversation):
        expected = HUMAN if i % 2 == 0 else ASSISTANT
        if turn.get("from") != expected:
            raise ValueError(f"conversation turn {i}: 'from' is {turn.get('from')!r}, expected {expected!r}")
        if not isinstance(turn.get("value"), str):
            raise ValueError(f"conversation turn {i}: 'value' must be a string")


def images_first(text: str) -> str:
    """A turn's ``<image>`` placeholders moved to its start, then a newline: LLaVA's ``preprocess_multimodal``.

    Port of haotian-liu/LLaVA ``llava/train/train.py`` ``preprocess_multimodal``: text without the placeholder,
    stripped, after ``<image>\\n``, stripped again. LLaVA keeps one placeholder; here each one stays, so a turn of
    several images (video frames) keeps its count.
    """
    count = text.count(IMAGE_PLACEHOLDER)
    if count == 0:
        return text
    rest = text.replace(IMAGE_PLACEHOLDER, "").strip()
    return (IMAGE_PLACEHOLDER * count + "\n" + rest).strip()


class ChatTemplate(ABC):
    """Renders a conversation as segments. With ``add_generation_prompt`` the final gpt turn is left out and the
    prompt ends where the model starts answering."""

    #: whether the text tokenizer's BOS token goes first.
    add_bos: bool = True

    @abstractmethod
    def segments(
        self,
        conversation: list[dict[str, str]],
        text_tokenizer: PreTrainedTokenizerBase,
        add_generation_prompt: bool = False,
    ) -> list[Segment]:
        """Conversation -> segments in order."""


class PlainTemplate(ChatTemplate):
    """LLaVA stage-1 ``plain``: ``<image>`` then the caption and a newline; only the caption is a target.

    As LLaVA's ``preprocess_plain`` (haotian-liu/LLaVA ``llava/train/train.py``), which asserts two turns and an
    ``<image>`` in the first, a conversation of another shape (text-only, multi-turn) is refused.
    """

    def segments(
        self,
        conversation: list[dict[str, str]],
        text_tokenizer: PreTrainedTokenizerBase,
        add_generation_prompt: bool = False,
    ) -> list[Segment]:
        check_conversation(conversation)
        if IMAGE_PLACEHOLDER not in conversation[0]["value"]:
            raise TemplateMismatch("plain template: the first turn has no <image> (stage 1 needs an image sample)")
        if len(conversation) > 2:
            raise TemplateMismatch(f"plain template: {len(conversation)} turns; it renders one image and one answer")
        out = [Segment(IMAGE_PLACEHOLDER, False)]
        if not add_generation_prompt:
            out.append(Segment(conversation[1]["value"] + "\n", True))
        return out


class VicunaV1Template(ChatTemplate):
    """LLaVA's ``vicuna_v1``: ``SYSTEM USER: q ASSISTANT: a</s>USER: ...``; answers (with ``</s>``) are targets.

    Args:
        system: the system prompt (LLaVA's ``conv_vicuna_v1.system`` by default).
        eos: the separator after each answer (``sep2``); a special token of the text tokenizer.
        image_first: move each turn's ``<image>`` to its start as LLaVA's training data loader does
            (``images_first``); ``False`` keeps placeholders where the text has them.
    """

    def __init__(
        self,
        system: str = (
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        eos: str = "</s>",
        image_first: bool = True,
    ) -> None:
        self.system = system
        self.eos = eos
        self.image_first = image_first

    def segments(
        self,
        conversation: list[dict[str, str]],
        text_tokenizer: PreTrainedTokenizerBase,
        add_generation_prompt: bool = False,
    ) -> list[Segment]:
        check_conversation(conversation)
        turns = prompt_turns(conversation, add_generation_prompt)
        if self.image_first:
            turns = [{**turn, "value": images_first(turn["value"])} for turn in turns]
        out: list[Segment] = []
        prefix = self.system + " "
        for i in range(0, len(turns), 2):
            out.append(Segment(f"{prefix}USER: {turns[i]['value']} ASSISTANT:", False))
            if i + 1 < len(turns):
                out.append(Segment(f" {turns[i + 1]['value']}{self.eos}", True))
            prefix = ""
        return out


class HFChatTemplate(ChatTemplate):
    """The text tokenizer's own ``chat_template`` (``apply_chat_template``); assistant messages are targets.

    Segments come from rendering growing prefixes of the conversation, so any template whose renderings of
    a prefix are prefixes of the whole works; others raise a clear error.
    """

    add_bos = False  # chat templates write their own BOS

    def __init__(self, system: str | None = None) -> None:
        self.system = system

    def segments(
        self,
        conversation: list[dict[str, str]],
        text_tokenizer: PreTrainedTokenizerBase,
        add_generation_prompt: bool = False,
    ) -> list[Segment]:
        check_conversation(conversation)
        if not getattr(text_tokenizer, "chat_template", None):
            raise ValueError("HFChatTemplate: the text tokenizer has no `chat_template`; use VicunaV1Template")

        def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
            if not messages:
                return ""
            return text_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

        messages = [{"role": "system", "content": self.system}] if self.system else []
        out: list[Segment] = []
        done = ""
        for turn in prompt_turns(conversation, add_generation_prompt):
            role = "user" if turn["from"] == HUMAN else "assistant"
            is_target = role == "assistant"
            before = render(messages, add_generation_prompt=is_target)
            messages.append({"role": role, "content": turn["value"]})
            after = render(messages, add_generation_prompt=False)
            for text, target in ((before, False), (after, is_target)):
                if not text.startswith(done):
                    raise ValueError("HFChatTemplate: the chat template is not prefix-stable; use a custom template")
                if text[len(done) :]:
                    out.append(Segment(text[len(done) :], target))
                done = text
        if add_generation_prompt:
            tail = render(messages, add_generation_prompt=True)[len(done) :]
            if tail:
                out.append(Segment(tail, False))
        return out
