"""Deterministic synthetic images of coloured shapes with boxes, masks and questions that need the objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tokencompose.llm.templates import VicunaV1Template

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40)}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
QUESTION_TYPES = ("color", "count", "presence", "position")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


@dataclass
class ShapesSample:
    """One synthetic sample. image (S, S, 3) uint8; masks (K, S, S) bool; boxes (K, 4) xyxy pixels."""

    key: str
    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    conversation: list[dict[str, str]]
    question_type: str


def _shape_mask(shape: str, cx: int, cy: int, r: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (abs(x - cx) <= r) & (abs(y - cy) <= r)
    top = cy - r  # triangle with its apex up
    return (y >= top) & (y <= cy + r) & (abs(x - cx) <= (y - top) / 2)


class ShapesGenerator:
    """Sample ``index`` of a given ``seed`` is always the same image and question.

    Up to four shapes, one per quadrant (so they never overlap), each a unique (colour, shape) pair. The
    question type cycles through ``QUESTION_TYPES`` so every type is equally frequent.
    """

    def __init__(self, image_size: int = 64, max_shapes: int = 4, seed: int = 0) -> None:
        if not 1 <= max_shapes <= 4:
            raise ValueError(f"ShapesGenerator: max_shapes={max_shapes}; must be in 1..4")
        self.image_size = image_size
        self.max_shapes = max_shapes
        self.seed = seed

    def __call__(self, index: int) -> ShapesSample:
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size
        image = np.empty((size, size, 3), dtype=np.uint8)
        image[:] = rng.integers(150, 200, size=3)
        count = int(rng.integers(1, self.max_shapes + 1))
        quadrants = rng.permutation(4)[:count]
        pairs = rng.permutation(len(SHAPES) * len(COLORS))[:count]
        colors = list(COLORS)
        masks, boxes, labels = [], [], []
        half = size // 2
        for quadrant, pair in zip(quadrants, pairs, strict=True):
            shape, color = SHAPES[pair % len(SHAPES)], colors[pair // len(SHAPES)]
            r = int(rng.integers(size // 10, size // 5))
            cx = (quadrant % 2) * half + int(rng.integers(r, half - r))
            cy = (quadrant // 2) * half + int(rng.integers(r, half - r))
            mask = _shape_mask(shape, cx, cy, r, size)
            image[mask] = COLORS[color]
            ys, xs = np.nonzero(mask)
            masks.append(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(f"{color} {shape}")
        question_type = QUESTION_TYPES[index % len(QUESTION_TYPES)]
        question, answer = self._question(question_type, labels, boxes, rng)
        return ShapesSample(
            key=f"{self.seed:04d}-{index:08d}",
            image=image,
            masks=np.stack(masks),
            boxes=np.asarray(boxes, dtype=np.float32),
            labels=labels,
            conversation=[{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
            question_type=question_type,
        )

    def _question(self, kind: str, labels: list[str], boxes: list[list[int]], rng: np.random.Generator) -> tuple[str, str]:
        shapes = [label.split()[1] for label in labels]
        if kind == "color":
            i = int(rng.integers(len(labels)))  # shapes of one kind can repeat: ask about a unique one
            unique = [j for j, s in enumerate(shapes) if shapes.count(s) == 1]
            i = unique[i % len(unique)] if unique else i
            return f"what color is the {shapes[i]} ?", labels[i].split()[0]
        if kind == "count":
            return "how many shapes are there ?", NUMBER_WORDS[len(labels)]
        if kind == "presence":
            if rng.random() < 0.5:
                return f"is there a {labels[int(rng.integers(len(labels)))]} ?", "yes"
            absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in labels]
            return f"is there a {absent[int(rng.integers(len(absent)))]} ?", "no"
        if len(labels) < 2:  # position needs two shapes: ask which side the only one is on
            on_left = boxes[0][0] + boxes[0][2] < self.image_size
            return f"is the {labels[0]} on the left ?", "yes" if on_left else "no"
        i, j = (int(k) for k in rng.permutation(len(labels))[:2])
        left = (boxes[i][0] + boxes[i][2]) < (boxes[j][0] + boxes[j][2])
        return f"is the {labels[i]} left of the {labels[j]} ?", "yes" if left else "no"

    def to_record(self, sample: ShapesSample) -> dict[str, Any]:
        """The JSON part of a shard sample (LLaVA's conversation format plus objects and the question type)."""
        return {
            "id": sample.key,
            "conversations": sample.conversation,
            "question_type": sample.question_type,
            "mask_size": list(sample.masks.shape[1:]),
            "objects": [
                {"box": box.tolist(), "label": label, "score": 1.0}
                for box, label in zip(sample.boxes, sample.labels, strict=True)
            ],
        }


def shapes_vocabulary() -> list[str]:
    """Every word the generator and the vicuna_v1 / plain templates can produce, special tokens first."""
    words = ["what", "color", "is", "the", "how", "many", "shapes", "are", "there", "a", "left", "of", "on"]
    words += ["?", "yes", "no", *SHAPES, *COLORS, *NUMBER_WORDS, "USER", "ASSISTANT", ":"]
    pre = pre_tokenizers.Whitespace()
    words += [w for w, _ in pre.pre_tokenize_str(VicunaV1Template().system)]
    seen: dict[str, None] = dict.fromkeys(SPECIAL_TOKENS)
    seen.update(dict.fromkeys(words))
    return list(seen)


# A minimal chat template in the vocabulary's words, so ``HFChatTemplate`` can be exercised offline.
SHAPES_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER : {{ m['content'] }} {% else %}ASSISTANT : {{ m['content'] }}{{ eos_token }} {% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT :{% endif %}"
)


def shapes_text_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level Hugging Face tokenizer over ``shapes_vocabulary()``, built offline (no download)."""
    vocab = {word: i for i, word in enumerate(shapes_vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = SHAPES_CHAT_TEMPLATE
    return tokenizer
