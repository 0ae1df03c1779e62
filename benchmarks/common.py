"""Shared benchmark helpers: timing with warm-up, machine description, a random LLaVA of a chosen size."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


SIZES = {
    # CPU-sized: a 224 px / patch 14 CLIP (256 patches) and a 4-layer LLaMA.
    "small": dict(vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                              image_size=224, patch_size=14),
                  text=dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                            num_key_value_heads=8, vocab_size=8000)),
    # Real LLaVA-1.5-7B shapes: CLIP ViT-L/14-336 and a 7B LLaMA (needs a large GPU).
    "7b": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14),
               text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32064)),
}


def random_llava(size: str) -> LlavaForConditionalGeneration:
    spec = SIZES[size]
    vocab = spec["text"]["vocab_size"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**spec["vision"]).to_dict(),
        text_config=LlamaConfig(**spec["text"], max_position_embeddings=4096).to_dict(),
        image_token_index=vocab - 1,
    )
    return LlavaForConditionalGeneration(config)
