"""Per-sample processing (image -> pixels, masks, conversation -> ids) and collation into a ``VLMBatch``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from tokencompose.data.annotations import BadSample, ObjectRequirements, check_objects
from tokencompose.llm.conversation import IGNORE_INDEX, ConversationEncoder, SequenceTooLong
from tokencompose.llm.templates import IMAGE_PLACEHOLDER, TemplateMismatch
from tokencompose.types import ObjectMasks, VLMBatch


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """LLaVA's ``expand2square``: centre the image on a square of ``fill``. Returns it and the (left, top) offset."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image, (0, 0)
    offset = ((side - width) // 2, (side - height) // 2)
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, offset)
    return square, offset


@dataclass
class ImageTransform:
    """Pad to square with the mean colour, resize to the encoder's size (bicubic), normalise.

    Masks get the same padding and a nearest resize, so they stay aligned with what the encoder sees.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        self._mean = torch.tensor(self.mean)[:, None, None]  # made once, not per sample
        self._std = torch.tensor(self.std)[:, None, None]

    def __call__(self, image: Image.Image, masks: np.ndarray | None = None) -> tuple[Tensor, Tensor | None]:
        """PIL image (+ (K, H, W) masks) -> pixels (3, S, S) float, masks (K, S, S) bool."""
        fill = tuple(int(255 * m) for m in self.mean)
        square, (left, top) = pad_to_square(image, fill)
        if square.size != (self.image_size, self.image_size):
            square = square.resize((self.image_size, self.image_size), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)
        pixels = (pixels - self._mean) / self._std
        if masks is None:
            return pixels, None
        side = max(image.size)
        padded = np.zeros((masks.shape[0], side, side), dtype=bool)
        padded[:, top : top + masks.shape[1], left : left + masks.shape[2]] = masks
        if side == self.image_size:
            return pixels, torch.from_numpy(padded)
        resized = F.interpolate(torch.from_numpy(padded)[None].float(), size=self.image_size, mode="nearest")
        return pixels, resized[0].bool()


    def to_original(self, masks: Tensor, size: tuple[int, int]) -> Tensor:
        """Masks on the encoder's square (K, S, S) -> the original image's frame (K, H, W); inverse of __call__."""
        width, height = size
        side = max(width, height)
        left, top = (side - width) // 2, (side - height) // 2
        square = F.interpolate(masks[None].float(), size=side, mode="nearest")[0].bool()
        return square[:, top : top + height, left : left + width]


IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
ROLES = ("human", "gpt")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders numbers by value: ``2.jpg`` before ``10.jpg``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def sample_images(sample: dict[str, Any]) -> list[Any]:
    """A sample's images in order: the single ``png``/``jpg``/... member, or numbered ones (``0.jpg``, ``1.jpg``,
    ... ``10.jpg`` — the frames of a video, or several images), in numeric order."""
    named = sorted((k for k in sample if not k.startswith("__") and k.rsplit(".", 1)[-1] in IMAGE_KEYS), key=natural_key)
    return [sample[k] for k in named]


def check_record(record: Any, num_images: int) -> list[dict[str, str]]:
    """The sample's conversation, or BadSample naming what is wrong with it."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list) or not record["conversations"]:
        raise BadSample("missing conversations")
    conversation = record["conversations"]
    for i, turn in enumerate(conversation):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES:
            raise BadSample("unknown role", f"turn {i}: {turn.get('from') if isinstance(turn, dict) else turn!r}")
        if turn["from"] != ROLES[i % 2] or not isinstance(turn.get("value"), str):
            raise BadSample("malformed conversation", f"turn {i}")
    placeholders = sum(turn["value"].count(IMAGE_PLACEHOLDER) for turn in conversation)
    if num_images == 0 and placeholders:
        raise BadSample("image placeholder without image")
    if placeholders < num_images:
        raise BadSample("image placeholder missing", f"{placeholders} for {num_images} image(s)")
    if placeholders > num_images:
        raise BadSample("image placeholder repeated", f"{placeholders} for {num_images} image(s)")
    return conversation


@dataclass
class ProcessedSample:
    """One example, as ``SampleProcessor`` makes it in a loader worker and ``Collator`` batches it.

    pixels (M, 3, S, S): the sample's images in placeholder order (M = 0 for text-only); masks (K, S, S) bool of
    its first image, scores (K,), embeddings (K, De) or None; ids and labels of the training text, prompt ids of
    the generation prompt (without the last answer); the last answer, the question before it (without the image
    placeholder) and the question type, for evaluation and prediction files.
    """

    key: str
    pixels: Tensor
    masks: Tensor | None
    scores: Tensor
    embeddings: Tensor | None
    input_ids: list[int]
    labels: list[int]
    prompt_ids: list[int]
    answer: str
    question_type: str
    question: str = ""

    @property
    def has_image(self) -> bool:
        return self.pixels.shape[0] > 0


@dataclass
class SampleProcessor:
    """A decoded shard sample -> tensors for one example (runs in data-loader workers).

    Raises ``BadSample`` for samples that cannot be used; the stream skips and counts them.
    ``objects``: what the model reads from stored annotations (None: only their own consistency is checked).
    ``require_target``: a sample must keep at least one answer token after truncation (training; a sample
    without one would add nothing but, in a batch of such samples, a NaN loss).
    """

    transform: ImageTransform
    conversations: ConversationEncoder
    objects: ObjectRequirements | None = None
    require_target: bool = False

    def __call__(self, sample: dict[str, Any]) -> ProcessedSample:
        record = sample.get("json")
        images = sample_images(sample)
        conversation = check_record(record, num_images=len(images))
        stored = check_objects(sample, record, images, self.objects)
        try:
            full, prompt = self.conversations.encode_with_prompt(conversation)
        except SequenceTooLong as error:
            raise BadSample("sequence too long", str(error)) from error
        except TemplateMismatch as error:
            raise BadSample("template mismatch", str(error)) from error
        if self.require_target and all(label == IGNORE_INDEX for label in full.labels):
            truncated = self.conversations.expanded_length(full.input_ids) >= self.conversations.max_length
            raise BadSample("no target after truncation" if truncated else "no target token",
                            f"max_length={self.conversations.max_length}" if truncated else "no answer to train on")
        size = self.transform.image_size
        pixels, mask_tensor = torch.zeros(0, 3, size, size), None
        if images:
            transformed = [self.transform(image, stored.masks if i == 0 and stored else None) for i, image in enumerate(images)]
            pixels = torch.stack([p for p, _ in transformed])  # (M, 3, S, S)
            mask_tensor = transformed[0][1]
        return ProcessedSample(
            key=sample["__key__"],
            pixels=pixels,
            masks=mask_tensor,
            scores=torch.zeros(0) if stored is None else stored.scores,
            embeddings=None if stored is None else stored.embeddings,
            input_ids=full.input_ids,
            labels=full.labels,
            prompt_ids=prompt.input_ids,
            answer=conversation[-1]["value"] if conversation[-1]["from"] == "gpt" else "",
            question_type=record.get("question_type", "unknown"),
            question=last_question(conversation),
        )


def last_question(conversation: list[dict[str, str]]) -> str:
    """The last human turn's text, without the image placeholder (what a prediction file shows as the question)."""
    human = [turn["value"] for turn in conversation if turn["from"] == ROLES[0]]
    return human[-1].replace(IMAGE_PLACEHOLDER, "").strip() if human else ""


def _pad(rows: list[list[int]], value: int, left: bool) -> tuple[Tensor, Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), value, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _stack_objects(samples: list[ProcessedSample], image_size: int) -> ObjectMasks | None:
    """One row per image (masks belong to a sample's single image; other images get empty rows)."""
    if all(s.masks is None for s in samples):
        return None
    images = sum(s.pixels.shape[0] for s in samples)
    most = max(0 if s.masks is None else s.masks.shape[0] for s in samples)
    masks = torch.zeros(images, most, image_size, image_size, dtype=torch.bool)
    scores = torch.zeros(images, most)
    valid = torch.zeros(images, most, dtype=torch.bool)
    widths = {s.key: s.embeddings.shape[-1] for s in samples if s.embeddings is not None}
    if len(set(widths.values())) > 1:  # only without a model's requirements (SampleProcessor.objects) to check
        raise ValueError(f"Collator: stored object embeddings of different widths in one batch: {widths}")
    embeddings = torch.zeros(images, most, next(iter(widths.values()))) if widths else None
    row = 0
    for s in samples:
        if s.masks is not None and s.masks.shape[0]:
            k = s.masks.shape[0]
            masks[row, :k], scores[row, :k], valid[row, :k] = s.masks, s.scores, True
            if embeddings is not None and s.embeddings is not None:
                embeddings[row, :k] = s.embeddings
        row += s.pixels.shape[0]
    return ObjectMasks(masks=masks, scores=scores, valid=valid, embeddings=embeddings)


@dataclass
class Collator:
    """Samples -> ``VLMBatch``: right padding for training, left padding for generation prompts."""

    pad_token_id: int

    def __call__(self, samples: list[ProcessedSample]) -> VLMBatch:
        input_ids, attention_mask = _pad([s.input_ids for s in samples], self.pad_token_id, left=False)
        labels, _ = _pad([s.labels for s in samples], IGNORE_INDEX, left=False)
        prompt_ids, prompt_mask = _pad([s.prompt_ids for s in samples], self.pad_token_id, left=True)
        pixels = torch.cat([s.pixels for s in samples])  # (I, 3, S, S): every image, in placeholder order
        return VLMBatch(
            pixels=pixels,
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            objects=_stack_objects(samples, pixels.shape[-1]),
            answers=[s.answer for s in samples],
            keys=[s.key for s in samples],
            question_types=[s.question_type for s in samples],
            images_per_sample=torch.tensor([s.pixels.shape[0] for s in samples], dtype=torch.long),
            questions=[s.question for s in samples],
        )
