"""What the data pipeline needs from a model, handed over once: ``VLM.data_transform()`` -> ``DataTransform``.

It holds the image transform (pad to square, resize, normalise), the conversation encoders for training (sized
with the training budget) and for everything else (the test-time budget), what the samples must bring for the
object tokens, and the padding id. LightningCLI links it from the model into ``ShardDataModule``; ``eval``, the
lmms-eval adapter, tests and benchmarks pass ``model.data_transform()`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokencompose.data.processing import Collator, ImageTransform, SampleProcessor
from tokencompose.llm.conversation import ConversationEncoder
from tokencompose.types import ObjectRequirements


@dataclass(frozen=True)
class DataTransform:
    """image: pixels and masks; train_text / eval_text: conversations -> ids and labels with the training and the
    test-time visual-token budgets; objects: what stored annotations must bring; pad_token_id: for batching."""

    image: ImageTransform
    train_text: ConversationEncoder
    eval_text: ConversationEncoder
    objects: ObjectRequirements
    pad_token_id: int

    def __post_init__(self) -> None:
        for phase, text in (("training", self.train_text), ("test", self.eval_text)):
            if text.max_length <= text.visual_tokens_per_image:
                raise ValueError(
                    f"model.max_length={text.max_length} leaves no room for text after the "
                    f"{text.visual_tokens_per_image} visual tokens of one image ({phase} budget): every image sample "
                    f"would be skipped; set model.max_length above {text.visual_tokens_per_image}"
                )

    def processor(self, training: bool) -> SampleProcessor:
        """Per-sample processing for the training split (``training``: training budget, samples must keep an
        answer token) or for validation, test and prediction."""
        return SampleProcessor(self.image, self.train_text if training else self.eval_text, objects=self.objects,
                               require_target=training)

    def collator(self) -> Collator:
        return Collator(pad_token_id=self.pad_token_id)
