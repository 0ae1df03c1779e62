"""Stored object annotations (masks, scores, embeddings) checked against their image and against the model.

A sample whose annotations disagree with each other, with its image or with what the model reads is a
``BadSample`` (skipped and counted by the stream), never a crash in the collator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokencompose.data.shards import EMBEDDINGS_KEY, MASKS_KEY, unpack_masks
from tokencompose.types import ObjectRequirements


class BadSample(ValueError):
    """A sample that cannot be trained on; ``reason`` is a short category used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class StoredObjects:
    """One image's checked annotations: masks (K, H, W) bool, scores (K,), embeddings (K, De) or None."""

    masks: np.ndarray
    scores: Tensor
    embeddings: Tensor | None


def _mask_size(record: dict[str, Any]) -> tuple[int, int]:
    size = record.get("mask_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise BadSample("bad object masks", f"mask_size={size!r}; expected [height, width]")
    return size[0], size[1]


def _scores(record: dict[str, Any], count: int) -> Tensor:
    objects = record.get("objects")
    if objects is None:
        return torch.ones(count)  # masks without records: all equally confident (ground truth)
    if not isinstance(objects, list) or len(objects) != count:
        given = len(objects) if isinstance(objects, list) else type(objects).__name__
        raise BadSample("annotation count mismatch", f"{given} objects for {count} masks")
    try:
        scores = [float(obj.get("score", 1.0)) for obj in objects]
    except (AttributeError, TypeError, ValueError) as error:
        raise BadSample("bad object record", str(error)) from error
    if not all(math.isfinite(score) for score in scores):
        raise BadSample("non-finite annotation", "an object score is NaN or infinite")
    return torch.tensor(scores, dtype=torch.float)


def _embeddings(stored: Any, count: int, width: int | None) -> Tensor:
    if not isinstance(stored, np.ndarray) or stored.ndim != 2 or stored.dtype.kind != "f":
        shape = getattr(stored, "shape", None)
        raise BadSample("bad object embeddings", f"expected a (K, De) float array, got {type(stored).__name__} {shape}")
    if stored.shape[0] != count:
        raise BadSample("annotation count mismatch", f"{stored.shape[0]} embeddings for {count} masks")
    if width is not None and stored.shape[1] != width:
        raise BadSample("embedding width mismatch", f"stored width {stored.shape[1]}, the model reads {width}")
    embeddings = torch.from_numpy(stored.astype(np.float32))
    if not torch.isfinite(embeddings).all():
        raise BadSample("non-finite annotation", "an object embedding has NaN or infinite values")
    return embeddings


def check_objects(sample: dict[str, Any], record: dict[str, Any], images: list[Any],
                  needs: ObjectRequirements | None) -> StoredObjects | None:
    """A decoded sample's stored objects for its single image, checked; None when it has none.

    ``needs`` None (no model known): annotations only have to agree with each other and the image.
    """
    packed = sample.get(MASKS_KEY)
    if packed is None:
        if needs is not None and needs.masks and images:
            raise BadSample("missing object masks", "the model's object tokenizer reads stored masks")
        return None
    if len(images) != 1:
        raise BadSample("object masks with several images")
    if not isinstance(packed, np.ndarray) or packed.ndim != 3 or packed.dtype != np.uint8:
        raise BadSample("bad object masks", f"expected (K, H, ceil(W/8)) uint8 bits, got "
                                            f"{getattr(packed, 'dtype', type(packed).__name__)} {getattr(packed, 'shape', '')}")
    height, width = _mask_size(record)
    if (height, width) != (images[0].height, images[0].width):
        raise BadSample("mask size mismatch", f"mask_size {height}x{width}, image {images[0].height}x{images[0].width}")
    if packed.shape[1:] != (height, -(-width // 8)):
        raise BadSample("mask size mismatch", f"packed masks {packed.shape[1:]} for mask_size {height}x{width}")
    count = packed.shape[0]
    scores = _scores(record, count)
    stored = sample.get(EMBEDDINGS_KEY)
    embeddings = None
    if needs is None or needs.embedding_width is not None:
        if stored is None and needs is not None:
            raise BadSample("missing object embeddings", f"the model reads stored embeddings of width {needs.embedding_width}")
        if stored is not None:
            embeddings = _embeddings(stored, count, None if needs is None else needs.embedding_width)
    return StoredObjects(unpack_masks(packed, width), scores, embeddings)
