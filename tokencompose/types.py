"""Typed boundaries between components: what an encoder returns, what a visual tokenizer returns.

Shape letters used across the package:
    B batch, I images, h/w patch grid, D width, N tokens, K masks/objects, H/W image pixels, T text tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class EncoderRequest:
    """What a part asks the encoder to compute beyond CLS, patches and embedding, for every call.

    cls_attention: layer indices (as given, e.g. -2) whose CLS-query attention over the patches is wanted.
    attention_keys: layer indices whose attention keys (mean over heads) are wanted (token similarity).
    inverse_projection: the pseudo-inverse of the final projection (embedding space -> patch width).
    Requests of several parts merge (``merge``): layers are unioned, so two parts never overwrite each other.
    """

    cls_attention: frozenset[int] = frozenset()
    attention_keys: frozenset[int] = frozenset()
    inverse_projection: bool = False

    @staticmethod
    def merge(requests: Iterable[EncoderRequest]) -> EncoderRequest:
        requests = list(requests)
        return EncoderRequest(
            cls_attention=frozenset().union(*(r.cls_attention for r in requests)),
            attention_keys=frozenset().union(*(r.attention_keys for r in requests)),
            inverse_projection=any(r.inverse_projection for r in requests),
        )


@dataclass
class EncoderOutput:
    """What every vision encoder returns for a batch of images.

    cls:       (B, Dv)      CLS token of the selected layer.
    patches:   (B, h, w, Dv) patch tokens of the selected layer, in raster order.
    embedding: (B, De)      final (projected) image embedding, the space MaskInversion works in.
    cls_attention: layer -> (B, H, h*w) the CLS query's post-softmax attention over the patches, per head, for
                   each layer of the ``EncoderRequest`` (keys as requested, e.g. -2).
    attention_keys: layer -> (B, 1 + h*w, c) that layer's attention keys (CLS first), averaged over heads.
    inverse_projection: (De, Dv) pseudo-inverse of the final projection, when requested.
    """

    cls: Tensor
    patches: Tensor
    embedding: Tensor
    cls_attention: dict[int, Tensor] = field(default_factory=dict)
    attention_keys: dict[int, Tensor] = field(default_factory=dict)
    inverse_projection: Tensor | None = None


@dataclass(frozen=True)
class ObjectRequirements:
    """What a model reads from stored annotations.

    masks: every sample with an image must bring object masks (an object tokenizer reads them and no online
        object source makes them).
    embedding_width: stored object embeddings must come with the masks, this wide (MaskInversion's De);
        None: the model does not read stored embeddings, so they are dropped.
    """

    masks: bool = False
    embedding_width: int | None = None

    @staticmethod
    def merge(needs: Iterable[ObjectRequirements]) -> ObjectRequirements:
        needs = list(needs)
        widths = {n.embedding_width for n in needs if n.embedding_width is not None}
        if len(widths) > 1:
            raise ValueError(f"object tokenizers read stored embeddings of different widths {sorted(widths)}")
        return ObjectRequirements(masks=any(n.masks for n in needs), embedding_width=next(iter(widths), None))


@dataclass
class ObjectMasks:
    """Object masks that come with the images (ground truth, or precomputed proposals).

    masks:  (B, K, H, W) bool, on the same padded square image the encoder sees.
    scores: (B, K) float, higher is more confident (detector score; 1.0 for ground truth).
    valid:  (B, K) bool, False for padding rows (images have different object counts).
    embeddings: (B, K, De) precomputed object embeddings (MaskInversion), or None.
    """

    masks: Tensor
    scores: Tensor
    valid: Tensor
    embeddings: Tensor | None = None

    @classmethod
    def empty(cls, batch_size: int, height: int, width: int, device: torch.device | None = None) -> ObjectMasks:
        return cls(
            masks=torch.zeros(batch_size, 0, height, width, dtype=torch.bool, device=device),
            scores=torch.zeros(batch_size, 0, device=device),
            valid=torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
        )


@dataclass
class TokenStream:
    """Tokens of one kind (CLS, patches, objects, ...) for a batch of images.

    tokens: (B, N, D) — rows where ``valid`` is False are padding and carry no information.
    valid:  (B, N) bool.
    """

    tokens: Tensor
    valid: Tensor

    def __post_init__(self) -> None:
        if self.tokens.shape[:2] != self.valid.shape:
            raise ValueError(f"tokens {tuple(self.tokens.shape)} and valid {tuple(self.valid.shape)} disagree on (B, N)")

    @property
    def width(self) -> int:
        return self.tokens.shape[-1]

    def replace(self, tokens: Tensor) -> TokenStream:
        return TokenStream(tokens=tokens, valid=self.valid)


@dataclass
class VisualSequence:
    """All visual tokens of a batch of images, in the order the LLM sees them.

    tokens: (B, N, D_llm); valid: (B, N) bool; kind: (N,) long — index into ``kinds`` per position.
    """

    tokens: Tensor
    valid: Tensor
    kind: Tensor
    kinds: tuple[str, ...]


@dataclass
class VLMBatch:
    """A collated batch, as the data pipeline hands it to the model.

    pixels:         (I, 3, S, S) normalised, padded-to-square images: every image of every sample, in the
                    order of the samples' image placeholders (a video is its frames); text-only samples add none.
    input_ids:      (B, T) right-padded, one image placeholder per image; labels (B, T), -100 off target.
    attention_mask: (B, T).
    prompt_ids:     (B, Tp) left-padded prompts without the final answer, for generation; prompt_mask (B, Tp).
    objects:        masks that came with the images (one row per image), or None.
    answers, keys, question_types: per sample, for evaluation; questions: the last question of each (no
                    ``<image>``), for prediction files (None when the batch was built without them).
    images_per_sample: (B,) long; None means exactly one image per sample.
    """

    pixels: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    prompt_ids: Tensor
    prompt_mask: Tensor
    objects: ObjectMasks | None
    answers: list[str]
    keys: list[str]
    question_types: list[str]
    images_per_sample: Tensor | None = None
    questions: list[str] | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def image_counts(self) -> Tensor:
        """(B,) images of each sample."""
        if self.images_per_sample is not None:
            return self.images_per_sample
        return torch.ones(len(self), dtype=torch.long, device=self.input_ids.device)
