"""``ask``: one question about one image, processed as the data pipeline does, then greedy decoding.

The image goes through ``decode_sample`` (safe decoders only, EXIF orientation, size guard) and the model's own
``SampleProcessor`` (pad to square, resize, normalise; the prompt of its chat template), so ``ask`` sees exactly
what ``predict`` would for the same image in a shard. The command line (``tokencompose ask``) and any
other front end (a web explorer) call this one function.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from PIL import Image

from tokencompose.data.annotations import BadSample
from tokencompose.data.processing import IMAGE_KEYS
from tokencompose.data.shards import DecodeError, decode_sample
from tokencompose.llm.templates import IMAGE_PLACEHOLDER
from tokencompose.model import VLM
from tokencompose.types import VLMBatch

# What ``ask`` takes as the picture: a file path, the encoded file's bytes, or a decoded PIL image.
ImageInput = str | Path | bytes | Image.Image


@dataclass(frozen=True)
class StreamCount:
    """Visual tokens one stream gave the image: ``tokens`` valid of ``slots``; ``to_llm`` False for a stream only
    the text fusion reads (LLaVA-Mini's patches)."""

    tokens: int
    slots: int
    to_llm: bool


@dataclass(frozen=True)
class Answer:
    """What ``ask`` returns: the greedy ``answer`` to ``question``, the visual tokens of each stream (in the
    model's stream order) and the wall-clock seconds of encoding the image (``encode_seconds``: encoder, object
    masks when computed online, tokenizers) and of decoding the answer (``generate_seconds``)."""

    question: str
    answer: str
    streams: dict[str, StreamCount]
    encode_seconds: float
    generate_seconds: float

    @property
    def visual_tokens(self) -> int:
        """Tokens the LLM sees for the image."""
        return sum(s.tokens for s in self.streams.values() if s.to_llm)

    @property
    def seconds(self) -> float:
        return self.encode_seconds + self.generate_seconds


def stored_masks_problem(model: VLM) -> str | None:
    """Why the model cannot answer about a new image: it reads object masks stored with its data (none for it)."""
    if not model.data_transform().objects.masks:
        return None
    return ("this recipe reads the object masks stored with its data (model.object_source is "
            f"{type(model.object_source).__name__}, and model.tokenizers has object tokens): a new image has none. "
            "Use a recipe whose model.object_source computes them (tokencompose.masks.ObjectAnnotator, as "
            "recipes/tiny/mask_llava_stage2.yaml), or annotate the image into a shard first (tokencompose annotate) "
            "and run predict on it")


def _image_member(image: ImageInput) -> tuple[str, str, bytes]:
    """(sample key, tar member extension, encoded bytes) of ``image``; PIL reads the format from the bytes, so the
    extension only has to be one of the safe decoders'."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "image", "png", buffer.getvalue()
    if isinstance(image, bytes):
        return "image", "png", image
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"--image: {str(image)!r} does not exist")
    suffix = path.suffix.lower().lstrip(".")
    return path.stem, suffix if suffix in IMAGE_KEYS else "png", path.read_bytes()


def question_batch(model: VLM, image: ImageInput, question: str) -> VLMBatch:
    """One question about one picture -> the one-sample ``VLMBatch`` ``ask`` answers, on the model's device:
    decoded and processed as the data pipeline does (see ``ask``; the explorer measures its cost on it)."""
    problem = stored_masks_problem(model)
    if problem:
        raise ValueError(f"ask: {problem}")
    key, extension, data = _image_member(image)
    record = {"conversations": [{"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"}]}
    raw = {"__key__": key, "json": json.dumps(record).encode(), extension: data}
    transform = model.data_transform()
    try:
        sample = transform.processor(training=False)(decode_sample(raw))
    except (DecodeError, BadSample) as error:
        shown = str(image) if isinstance(image, (str, Path)) else type(image).__name__
        raise ValueError(f"--image {shown!r}: {error}") from error
    return move_data_to_device(transform.collator()([sample]), model.device)


def ask(model: VLM, image: ImageInput, question: str, max_new_tokens: int | None = None) -> Answer:
    """The model's greedy answer to ``question`` about ``image`` (a file path, encoded bytes or a PIL image),
    and the visual tokens of each stream.

    The image goes through the data pipeline's own decoding (safe decoders, EXIF orientation, size guard) and the
    model's ``SampleProcessor``, so the answer is the one ``predict`` gives for the same image in a shard. Object
    masks are computed from the image when the model's object source does that (MaskInversion runs with
    autograd); a model that reads stored masks raises ValueError saying so, a bad image ValueError naming it.
    The model is put in eval mode and stays on its device.
    """
    batch = question_batch(model, image, question)
    model.eval()
    with torch.inference_mode(not model.needs_autograd):  # online MaskInversion needs autograd
        start = time.perf_counter()
        visual = model.encode_images(batch.pixels, batch.objects)
        encoded = time.perf_counter()
        answer = model.generate(batch, max_new_tokens=max_new_tokens, visual=visual)[0]
        done = time.perf_counter()
    to_llm = model.llm_positions(visual)
    streams = {}
    for index, name in enumerate(visual.kinds):
        slots = visual.kind == index  # (N,)
        streams[name] = StreamCount(int(visual.valid[0, slots].sum()), int(slots.sum()), bool(to_llm[slots].all()))
    return Answer(question, answer, streams, encoded - start, done - encoded)
