"""Prefill cost vs visual-token count on one LLM: 576 (LLaVA-1.5), 57 and 15 (Mask-LLaVA), 1 (LLaVA-Mini).

Measures wall time (median) and FLOPs (torch.utils.flop_counter, counted, not estimated) of one prefill of
`visual + text` tokens, and prints each budget relative to LLaVA-1.5's 576 in the same run.

    uv run python benchmarks/prefill_vs_tokens.py                   # CPU, 8-layer 1024-wide LLaMA
    uv run python benchmarks/prefill_vs_tokens.py --size 7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, machine, median_seconds  # noqa: E402

LLM_SIZES = {
    "small": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=16, vocab_size=32000),
    "7b": SIZES["7b"]["text"],
}
BUDGETS = (("LLaVA-1.5", 576), ("Mask-LLaVA 90%", 57), ("Mask-LLaVA 95%", 15), ("LLaVA-Mini", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=list(LLM_SIZES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--text", type=int, default=64, help="text tokens around the image")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLM_SIZES[args.size], max_position_embeddings=4096)).to(device, dtype).eval()
    width = model.config.hidden_size
    print(f"# prefill vs visual tokens — {machine()}, LLM size={args.size}, dtype={args.dtype}, +{args.text} text tokens")
    print("| scheme | visual tokens | sequence | prefill (ms) | TFLOPs | time vs 576 | FLOPs vs 576 |")
    print("|---|---|---|---|---|---|---|")
    reference = None
    for name, visual in BUDGETS:
        length = visual + args.text
        embeds = torch.randn(1, length, width, device=device, dtype=dtype)

        def prefill(embeds: torch.Tensor = embeds) -> torch.Tensor:
            with torch.no_grad():
                return model(inputs_embeds=embeds, use_cache=True).logits[:, -1]

        with FlopCounterMode(display=False) as counter:
            prefill()
        flops = counter.get_total_flops()
        seconds = median_seconds(prefill, device, args.repeats)
        reference = reference or (seconds, flops)
        print(f"| {name} | {visual} | {length} | {1000 * seconds:.1f} | {flops / 1e12:.4f} | "
              f"{seconds / reference[0]:.3f} | {flops / reference[1]:.3f} |")


if __name__ == "__main__":
    main()
