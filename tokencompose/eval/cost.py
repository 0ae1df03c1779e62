"""Per-sample cost of answering: FLOPs and wall time per stage, time to first token, latency, decode speed, memory.

Timings come from ``warmup`` untimed answers followed by ``repeats`` timed answers per sample; each timed answer
gives one TTFT and one latency, reported as their median and interquartile range (one or two samples made TTFT
jump by 60x across a sweep). Decode speed is measured on a fixed-length decode (``decode_steps`` new tokens,
EOS ignored), since benchmark answers often end after one token and leave no decode step to time.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tokencompose.llm.generation import greedy_generate
from tokencompose.profiling import STAGES, StageProfiler
from tokencompose.types import VLMBatch

BEFORE_FIRST_TOKEN = ("encoder", "mask_front_end", "reduction", "projector", "prefill")
CUDA_PEAK = "cuda_max_allocated"  # torch.cuda.max_memory_allocated over the measurement (reset at its start)
PROCESS_PEAK = "process_max_rss"  # the process's peak resident set size since it started (cannot be reset)


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range (p75 - p25) of repeated measurements."""

    median: float
    iqr: float
    count: int


def spread(values: Sequence[float]) -> Spread:
    """Median and interquartile range of ``values`` (inclusive quartiles; the IQR of one value is 0)."""
    if not values:
        raise ValueError("spread of no measurements")
    if len(values) == 1:
        return Spread(float(values[0]), 0.0, 1)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Spread(float(statistics.median(values)), float(q3 - q1), len(values))


@dataclass
class Cost:
    """Per sample (batch size 1). ``ms``/``gflops``: means per stage over the timed answers; ``ttft_ms``,
    ``latency_ms``, ``decode_tokens_per_s``: median and IQR over them; ``peak_memory_mb`` is what
    ``peak_memory_kind`` names. ``front_end_cached``: object annotations came stored with the data, so the
    mask front end cost nothing here (its offline cost is the annotate job's)."""

    ms: dict[str, float]
    gflops: dict[str, float]
    ttft_ms: Spread
    latency_ms: Spread
    decode_tokens_per_s: Spread
    peak_memory_mb: float
    peak_memory_kind: str
    front_end_cached: bool

    def columns(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {f"ms_{s}": round(self.ms.get(s, 0.0), 3) for s in STAGES}
        out.update({f"gflops_{s}": round(self.gflops.get(s, 0.0), 4) for s in STAGES})
        out.update(ttft_ms=round(self.ttft_ms.median, 3), ttft_ms_iqr=round(self.ttft_ms.iqr, 3),
                   latency_ms=round(self.latency_ms.median, 3), latency_ms_iqr=round(self.latency_ms.iqr, 3),
                   decode_tokens_per_s=round(self.decode_tokens_per_s.median, 1),
                   decode_tokens_per_s_iqr=round(self.decode_tokens_per_s.iqr, 1),
                   timed_runs=self.ttft_ms.count,
                   peak_memory_mb=round(self.peak_memory_mb, 1), peak_memory_kind=self.peak_memory_kind,
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_answer(model, single: VLMBatch, max_new_tokens: int | None, device: torch.device) -> tuple[StageProfiler, float]:
    """One answer as ``evaluate`` gives it: its per-stage seconds and its end-to-end seconds."""
    timer = StageProfiler()
    _sync(device)
    start = time.perf_counter()
    model.generate(single, max_new_tokens, profiler=timer)
    _sync(device)
    return timer, time.perf_counter() - start


@torch.no_grad()
def _decode_rate(model, single: VLMBatch, decode_steps: int) -> float:
    """New tokens per second over ``decode_steps - 1`` cached decode steps after the prefill (EOS ignored)."""
    prompt = model.fuse(single, for_generation=True)
    timer = StageProfiler()
    greedy_generate(model.llm, prompt, decode_steps, True, timer, model.decoding.stepper(model.llm, prompt, True),
                    stop_at_eos=False)
    return (decode_steps - 1) / timer.seconds["decode"]


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, CUDA_PEAK
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), PROCESS_PEAK


def measure_cost(model, batch: VLMBatch, samples: int = 4, max_new_tokens: int | None = None, repeats: int = 5,
                 warmup: int = 1, decode_steps: int = 16) -> Cost:
    """Answer ``samples`` samples of ``batch`` one at a time: ``warmup`` untimed answers, then per sample
    ``repeats`` timed answers, ``repeats`` fixed-length decodes and one FLOP-counting answer."""
    for name, value, least in (("samples", samples, 1), ("repeats", repeats, 1), ("warmup", warmup, 0),
                               ("decode_steps", decode_steps, 2)):
        if value < least:
            raise ValueError(f"measure_cost: {name}={value}; must be >= {least}")
    device = next(model.parameters()).device
    singles = [_single(batch, i) for i in range(min(samples, len(batch)))]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):  # first calls pay for lazy initialisation, kernel selection and allocator growth
        model.generate(singles[0], max_new_tokens)
    stage_seconds: dict[str, float] = {}
    ttft, latency, rate = [], [], []
    counter = StageProfiler(count_flops=True)
    for single in singles:
        for _ in range(repeats):
            timer, seconds = _timed_answer(model, single, max_new_tokens, device)
            for name, value in timer.seconds.items():
                stage_seconds[name] = stage_seconds.get(name, 0.0) + value
            ttft.append(1000 * sum(timer.seconds.get(s, 0.0) for s in BEFORE_FIRST_TOKEN))
            latency.append(1000 * seconds)
            rate.append(_decode_rate(model, single, decode_steps))
        model.generate(single, max_new_tokens, profiler=counter)
    peak, kind = _peak_memory(device)
    return Cost(
        ms={k: 1000 * v / len(ttft) for k, v in stage_seconds.items()},
        gflops={k: v / len(singles) / 1e9 for k, v in counter.flops.items()},
        ttft_ms=spread(ttft),
        latency_ms=spread(latency),
        decode_tokens_per_s=spread(rate),
        peak_memory_mb=peak,
        peak_memory_kind=kind,
        front_end_cached=not model.object_source.computes_objects,
    )
