"""Per-sample cost of answering: FLOPs and wall time per stage, time to first token, decode speed, memory."""

from __future__ import annotations

import resource
from dataclasses import dataclass

import torch

from tokencompose.profiling import STAGES, StageProfiler
from tokencompose.types import VLMBatch

BEFORE_FIRST_TOKEN = ("encoder", "mask_front_end", "reduction", "projector", "prefill")


@dataclass
class Cost:
    """Means per sample over the measured samples (batch size 1). ``front_end_cached``: object annotations came
    stored with the data, so the mask front end cost nothing here (its offline cost is the annotate job's)."""

    ms: dict[str, float]
    gflops: dict[str, float]
    ttft_ms: float
    decode_tokens_per_s: float
    peak_memory_mb: float
    front_end_cached: bool

    def columns(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {f"ms_{s}": round(self.ms.get(s, 0.0), 3) for s in STAGES}
        out.update({f"gflops_{s}": round(self.gflops.get(s, 0.0), 4) for s in STAGES})
        out.update(ttft_ms=round(self.ttft_ms, 3), decode_tokens_per_s=round(self.decode_tokens_per_s, 1),
                   peak_memory_mb=round(self.peak_memory_mb, 1),
                   mask_front_end="cached" if self.front_end_cached else "online")
        return out


def _single(batch: VLMBatch, i: int) -> VLMBatch:
    """Sample ``i`` of ``batch`` alone (its own images and object rows)."""
    keep = batch.prompt_mask[i].bool()
    counts = batch.image_counts()
    start = int(counts[:i].sum())
    images = slice(start, start + int(counts[i]))
    objects = batch.objects
    if objects is not None:
        objects = type(objects)(*(None if t is None else t[images] for t in (objects.masks, objects.scores, objects.valid, objects.embeddings)))
    return VLMBatch(
        images_per_sample=counts[i : i + 1],
        pixels=batch.pixels[images], input_ids=batch.input_ids[i : i + 1], attention_mask=batch.attention_mask[i : i + 1],
        labels=batch.labels[i : i + 1], prompt_ids=batch.prompt_ids[i : i + 1, keep], prompt_mask=batch.prompt_mask[i : i + 1, keep],
        objects=objects, answers=batch.answers[i : i + 1], keys=batch.keys[i : i + 1], question_types=batch.question_types[i : i + 1],
    )


def measure_cost(model, batch: VLMBatch, samples: int = 4, max_new_tokens: int | None = None) -> Cost:
    """Answer ``samples`` samples of ``batch`` one at a time, once timed and once counting FLOPs."""
    singles = [_single(batch, i) for i in range(min(samples, len(batch)))]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    model.generate(singles[0], max_new_tokens)  # warm-up
    timer, counter = StageProfiler(), StageProfiler(count_flops=True)
    generated = 0
    for single in singles:
        answer = model.generate(single, max_new_tokens, profiler=timer)[0]
        generated += max(1, len(model.llm.text_tokenizer(answer, add_special_tokens=False).input_ids))
        model.generate(single, max_new_tokens, profiler=counter)
    n = len(singles)
    ms = {k: 1000 * v / n for k, v in timer.seconds.items()}
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    decode_s = timer.seconds.get("decode", 0.0)
    return Cost(
        ms=ms,
        gflops={k: v / n / 1e9 for k, v in counter.flops.items()},
        ttft_ms=sum(ms.get(s, 0.0) for s in BEFORE_FIRST_TOKEN),
        decode_tokens_per_s=(generated - n) / decode_s if decode_s > 0 else 0.0,
        peak_memory_mb=peak,
        front_end_cached=not model.object_source.computes_objects,
    )
