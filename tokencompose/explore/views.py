"""One model, one image, one question -> everything the explorer shows: the answer and tokens per stream
(``tokencompose.ask``), time to first token and prefill FLOPs (``eval.cost.measure_cost``), the objects the object
tokenizer keeps with their scores, the LeGrad map of a chosen object's MaskInversion embedding, the patches
FasterVLM / VisionZip keep. Everything runs through the model's own parts; nothing here re-implements one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tokencompose.eval.cost import measure_cost
from tokencompose.explore.overlays import heatmap_overlay, kept_patch_overlay, object_overlay
from tokencompose.inference import Answer, ImageInput, ask, question_batch
from tokencompose.masks.annotator import unnormalise
from tokencompose.masks.legrad import legrad
from tokencompose.model import VLM
from tokencompose.tokenizers import CLSAttentionSelector, ObjectTokenizer, VisionZipTokenizer
from tokencompose.types import ObjectMasks


@dataclass
class Look:
    """What one model answers and keeps for one image.

    image: (S, S, 3) uint8, the padded square picture the encoder sees; every overlay is drawn on it.
    objects: the kept objects tinted (None when the model has no object tokens); object_scores their scores,
    best first, as the object tokenizer ranks them; object_map: the chosen object's LeGrad map over its
    MaskInversion embedding (None without embeddings). kept_patches: stream -> the patches it keeps whole.
    """

    answer: Answer
    ttft_ms: float
    prefill_gflops: float
    image: np.ndarray
    objects: np.ndarray | None = None
    object_scores: list[float] = field(default_factory=list)
    proposed_objects: int = 0
    object_map: np.ndarray | None = None
    chosen_object: int | None = None
    kept_patches: dict[str, np.ndarray] = field(default_factory=dict)


def shows(model: VLM) -> dict[str, bool]:
    """Which pictures ``look`` can draw for ``model``: ``objects`` (an object tokenizer), ``object_map`` (objects
    computed online, with MaskInversion embeddings), ``kept_patches`` (a FasterVLM or VisionZip stream)."""
    tokenizers = list(model.tokenizers.values())
    objects = any(isinstance(t, ObjectTokenizer) for t in tokenizers)
    return {"objects": objects, "object_map": objects and model.object_source.computes_objects,
            "kept_patches": any(isinstance(t, (CLSAttentionSelector, VisionZipTokenizer)) for t in tokenizers)}


def to_uint8(pixels: torch.Tensor, model: VLM) -> np.ndarray:
    """Normalised pixels (3, S, S) -> the picture (S, S, 3) uint8."""
    image = unnormalise(pixels[None].float(), model.encoder)[0]  # (3, S, S) in [0, 1]
    return (image.permute(1, 2, 0) * 255).round().byte().cpu().numpy()


def image_objects(model: VLM, pixels: torch.Tensor, given: ObjectMasks | None) -> ObjectMasks | None:
    """The object masks the model's tokenizers see for ``pixels`` (1, 3, S, S): its object source's (run again
    here, online MaskInversion with autograd) or those given with the batch."""
    if not model.object_source.computes_objects:
        return given
    with torch.inference_mode(False):
        return model.object_source(model.encoder, pixels, given)


def _objects_view(model: VLM, look: Look, pixels: torch.Tensor, objects: ObjectMasks, chosen: int) -> None:
    tokenizer = next((t for t in model.tokenizers.values() if isinstance(t, ObjectTokenizer)), None)
    if tokenizer is None:
        return
    index, valid = tokenizer.select(objects)  # (1, n) best first
    kept = index[0][valid[0]]  # (k,)
    masks = objects.masks[0, kept].bool().cpu().numpy()  # (k, S, S)
    look.objects = object_overlay(look.image, masks)
    look.object_scores = [round(float(s), 3) for s in objects.scores[0, kept]]
    look.proposed_objects = int(objects.valid[0].sum())
    if objects.embeddings is not None and len(kept):
        look.chosen_object = min(max(chosen, 0), len(kept) - 1)
        embedding = objects.embeddings[0, kept[look.chosen_object]][None]  # (1, De)
        heat = legrad(model.encoder, pixels, embedding)[0]  # (S, S) in [0, 1]
        look.object_map = heatmap_overlay(look.image, heat.cpu().numpy())


def _kept_patches(model: VLM, pixels: torch.Tensor, image: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for name, tokenizer in model.tokenizers.items():
        if isinstance(tokenizer, CLSAttentionSelector):
            pick = tokenizer.kept_patches
        elif isinstance(tokenizer, VisionZipTokenizer):
            pick = tokenizer.dominant_patches
        else:
            continue
        with torch.no_grad():
            features = model.encoder(pixels, tokenizer.encoder_request())
        out[name] = kept_patch_overlay(image, pick(features)[0].cpu().numpy(), model.encoder.grid_size)
    return out


def look(model: VLM, image: ImageInput, question: str, chosen_object: int = 0) -> Look:
    """``model``'s answer to ``question`` about ``image`` (``tokencompose.ask``), its cost and what it keeps.

    ``chosen_object``: which kept object (0 = the best) to draw the MaskInversion map of. The cost is
    ``measure_cost``'s on the same one-sample batch (one warm-up, the median of three timed runs, one FLOP-counting
    run; decode speed is not shown, so its fixed-length decode is the shortest).
    Raises ValueError as ``ask`` does (a model that needs stored masks, a bad image).
    """
    answer = ask(model, image, question)
    batch = question_batch(model, image, question)
    cost = measure_cost(model, batch, samples=1, repeats=3, decode_steps=2)
    pixels = batch.pixels[:1]  # (1, 3, S, S)
    view = Look(answer=answer, ttft_ms=cost.ttft_ms.median, prefill_gflops=cost.gflops.get("prefill", 0.0),
                image=to_uint8(pixels[0], model))
    objects = image_objects(model, pixels, batch.objects)
    if objects is not None:
        _objects_view(model, view, pixels, objects, chosen_object)
    view.kept_patches = _kept_patches(model, pixels, view.image)
    return view


def tokens_markdown(look: Look) -> str:
    """The visual tokens per stream, as a Markdown table (the LLM's total first)."""
    rows = [f"**{look.answer.visual_tokens} visual tokens** to the LLM", "", "| stream | tokens | slots |",
            "|---|---|---|"]
    for name, count in look.answer.streams.items():
        rows.append(f"| {name}{'' if count.to_llm else ' (text fusion only)'} | {count.tokens} | {count.slots} |")
    return "\n".join(rows)


def answer_markdown(look: Look) -> str:
    """The answer and its cost, as Markdown."""
    text = (f"**Answer:** {look.answer.answer or '(empty)'}\n\nTTFT {look.ttft_ms:.1f} ms · prefill "
            f"{look.prefill_gflops:.4f} GFLOPs · answered in {look.answer.seconds * 1000:.0f} ms")
    if look.object_scores:
        scores = ", ".join(f"#{i} {s:.2f}" for i, s in enumerate(look.object_scores))
        text += (f"\n\nObjects kept: {len(look.object_scores)} of {look.proposed_objects} proposed (scores: {scores})"
                 + (f"; map of #{look.chosen_object}" if look.chosen_object is not None else ""))
    return text
