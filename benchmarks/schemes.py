"""Token schemes on one LLM: visual tokens, FLOPs and time of encoder + reduction + prefill, time to first
token, decode tokens/s and KV-cache bytes per image — LLaVA-1.5 is the peer every row is compared with.

    uv run python benchmarks/schemes.py                                     # CPU: small random models
    uv run python benchmarks/schemes.py --size 7b --device cuda             # real shapes, random weights, bf16

LLaVA-Mini's published numbers to compare with: 77 % fewer FLOPs, 360 MB -> 0.6 MB KV cache per image.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, machine  # noqa: E402

from tokencompose.data.datamodule import SyntheticShapes
from tokencompose.data.shards import decode_sample
from tokencompose.data.synthetic import ShapesGenerator, shapes_text_tokenizer
from tokencompose.encoders import HFCLIPEncoder
from tokencompose.eval.cost import measure_cost
from tokencompose.llm import CausalLM, FastV, FitPrune, HideBehindStream, ModalityPreFusion, SparseVLM
from tokencompose.model import VLM
from tokencompose.tokenizers import (
    CLSAttentionSelector,
    CompressionTokens,
    GlobalTokenizer,
    MatryoshkaPoolTokenizer,
    MatryoshkaQueryTransformer,
    ObjectTokenizer,
    PatchPoolTokenizer,
    QueryCompressor,
    VisionZipTokenizer,
)

SMALL = dict(vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                         image_size=336, patch_size=14, projection_dim=256),
             text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                       num_key_value_heads=16))


FITPRUNE_90 = json.loads((Path(__file__).resolve().parents[1] / "recipes/schedules/fitprune_llava15_7b_90.json").read_text())["schedule"]


def schemes(grid: int, layers: int):
    """name -> (tokenizers, extra VLM arguments). FastV's, FitPrune's and SparseVLM's LLM is an eager-attention
    copy of the same weights; FitPrune runs the published 90 % schedule's first ``layers`` counts."""
    return {
        "LLaVA-1.5 (all patches)": (lambda: {"patch": PatchPoolTokenizer(grid=None)}, None),
        "FastV (K=2, drop 50 %)": (lambda: {"patch": PatchPoolTokenizer(grid=None)},
                                   lambda: {"decoding": FastV(layer=2, drop_ratio=0.5), "eager": True}),
        "FitPrune (published 90 % schedule)": (lambda: {"patch": PatchPoolTokenizer(grid=None)},
                                               lambda: {"decoding": FitPrune(schedule=FITPRUNE_90[:layers]), "eager": True}),
        "SparseVLM (budget 192, cuts after 2/4/6)": (lambda: {"patch": PatchPoolTokenizer(grid=None)},
                                                     lambda: {"decoding": SparseVLM(budget=192, layers=(2, 4, 6)),
                                                              "eager": True}),
        "VoCo-LLaMA (576 + 1, image hidden after)": (
            lambda: {"patch": PatchPoolTokenizer(grid=None), "voco": partial(CompressionTokens, count=1)},
            lambda: {"attention": HideBehindStream("voco")}),
        "Mask-LLaVA (1 + 6x6 + 20)": (lambda: {"cls": GlobalTokenizer(), "patch": PatchPoolTokenizer(grid=6),
                                               "objects": ObjectTokenizer(max_objects=20)}, None),
        "M3 @ 36": (lambda: {"patch": MatryoshkaPoolTokenizer(scales=(1, 36, grid * grid), scale=36)}, None),
        "MQT @ 16": (lambda: {"patch": partial(MatryoshkaQueryTransformer, num_queries=64, heads=4, active=16)}, None),
        "FasterVLM (keep 10%)": (lambda: {"patch": CLSAttentionSelector(keep=grid * grid // 10)}, None),
        "VisionZip (54 + 10)": (lambda: {"patch": VisionZipTokenizer(dominant=54, contextual=10)}, None),
        "LLaVA-Mini (1 token + 4 pre-fusion layers)": (
            lambda: {"patch": PatchPoolTokenizer(grid=None), "compressed": partial(QueryCompressor, side=1, heads=4)},
            lambda: {"text_fusion": partial(ModalityPreFusion, num_layers=4, context="patch")}),
    }


def cached_tokens(model, tokens: float, layers: int) -> float:
    """Visual tokens whose keys and values stay in the cache of a ``layers``-deep LLM, averaged over layers
    (FastV keeps all of them below layer K)."""
    return tokens * model.decoding.kept_fraction(round(tokens), layers)


def kv_bytes_per_token(config, dtype_bytes: int) -> int:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * (config.hidden_size // config.num_attention_heads) * dtype_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "7b"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    spec = SMALL if args.size == "small" else dict(vision={**SIZES["7b"]["vision"], "projection_dim": 768}, text=SIZES["7b"]["text"])
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = shapes_text_tokenizer()
    torch.manual_seed(0)
    encoder = HFCLIPEncoder(config=spec["vision"])
    llm_config = {"model_type": "llama", **{k: v for k, v in spec["text"].items() if k != "vocab_size"}}
    llm = CausalLM(text_tokenizer=tokenizer, config=llm_config)
    eager = CausalLM(text_tokenizer=tokenizer, config={**llm_config, "attn_implementation": "eager"})
    eager.load_state_dict(llm.state_dict())
    grid = encoder.grid_size
    generator = ShapesGenerator(image_size=336, seed=0)
    print(f"# schemes on one LLM — {machine()}, size={args.size}, {grid * grid} patches, LLM {llm.model.config.num_hidden_layers} "
          f"layers x {llm.hidden_size}; per image, batch 1, greedy")
    print("| scheme | visual tokens | GFLOPs enc+red+prefill | FLOPs vs LLaVA-1.5 | TTFT ms | decode tok/s | KV MB / image (this LLM) | KV MB / image (Vicuna-7B fp16) |")
    print("|---|---|---|---|---|---|---|---|")
    reference = None
    vicuna = type(llm.model.config)(**SIZES["7b"]["text"])
    for name, (tokenizers, extra) in schemes(grid, llm.model.config.num_hidden_layers).items():
        options = extra() if extra else {}
        chosen = eager if options.pop("eager", False) else llm
        model = VLM(encoder=encoder, tokenizers=tokenizers(), llm=chosen, max_length=4096, max_new_tokens=8,
                    **options).to(device, dtype).eval()
        transform = model.data_transform()
        processor = transform.processor(training=False)
        samples = [processor(decode_sample(SyntheticShapes._encode(generator, i))) for i in range(args.samples)]
        batch = transform.collator()(samples)
        batch.pixels = batch.pixels.to(device, dtype)
        with torch.no_grad():
            visual = model.encode_images(batch.pixels, batch.objects)
            tokens = visual.valid[:, model.llm_positions(visual)].sum(1).float().mean().item()  # per image
            cost = measure_cost(model, batch, samples=args.samples, max_new_tokens=8)
        gflops = sum(cost.gflops.get(s, 0.0) for s in ("encoder", "reduction", "projector", "prefill"))
        reference = reference or gflops
        print(f"| {name} | {tokens:.1f} | {gflops:.1f} | {gflops / reference:.2f} | {cost.ttft_ms.median:.0f} | {cost.decode_tokens_per_s.median:.1f} | "
              f"{cached_tokens(model, tokens, llm.model.config.num_hidden_layers) * kv_bytes_per_token(llm.model.config, 2 if dtype == torch.bfloat16 else 4) / 2**20:.2f} | "
              f"{cached_tokens(model, tokens, vicuna.num_hidden_layers) * kv_bytes_per_token(vicuna, 2) / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
