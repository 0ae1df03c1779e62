"""Composition overhead: our LLaVA-1.5 composition vs Hugging Face LlavaForConditionalGeneration.

Same weights (ours is loaded from the HF checkpoint), same inputs, same run; forward and forward+backward.
Prints the median times and ours/HF as a ratio (goal <= 1.05).

    uv run python benchmarks/composition_overhead.py                 # CPU, small random model
    uv run python benchmarks/composition_overhead.py --size 7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_seconds, random_llava  # noqa: E402

from tokencompose.data.synthetic import shapes_text_tokenizer
from tokencompose.export import load_hf_llava
from tokencompose.llm import IMAGE_TOKEN_ID
from tokencompose.types import VLMBatch


def inputs(batch: int, text: int, patches: int, vocab: int, image_token: int, size: int, device):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab - 2, (batch, text), generator=generator)
    ids[:, 1] = IMAGE_TOKEN_ID
    ours = ids.clone()
    hf = torch.cat([ids[:, :1], torch.full((batch, patches), image_token), ids[:, 2:]], dim=1)
    pixels = torch.randn(batch, 3, size, size, generator=generator)
    labels_hf = hf.clone()
    labels_hf[:, : patches + 1] = -100
    labels_ours = ours.clone()
    labels_ours[:, :2] = -100
    mask = torch.ones_like(ours)
    batch_ours = VLMBatch(pixels=pixels.to(device), input_ids=ours.to(device), attention_mask=mask.to(device),
                          labels=labels_ours.to(device), prompt_ids=ours.to(device), prompt_mask=mask.to(device),
                          objects=None, answers=[], keys=[], question_types=[])
    return batch_ours, dict(input_ids=hf.to(device), pixel_values=pixels.to(device),
                            attention_mask=torch.ones_like(hf).to(device), labels=labels_hf.to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "7b"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    hf = random_llava(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        shapes_text_tokenizer().save_pretrained(tmp)
        ours = load_hf_llava(tmp)
    hf = hf.to(device, dtype)
    ours = ours.to(device, dtype)
    ours.encoder.freeze = False  # both vision towers take gradients, as HF's does by default
    ours.encoder.requires_grad_(True)
    vision = hf.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    batch, hf_inputs = inputs(args.batch, args.text, patches, hf.config.text_config.vocab_size,
                              hf.config.image_token_index, vision.image_size, device)

    def ours_forward():
        with torch.no_grad():
            return ours(batch)[1]

    def hf_forward():
        with torch.no_grad():
            return hf(**hf_inputs).loss

    def ours_backward():
        ours.zero_grad(set_to_none=True)
        ours(batch)[1].backward()

    def hf_backward():
        hf.zero_grad(set_to_none=True)
        hf(**hf_inputs).loss.backward()

    ours.train()
    hf.train()
    print(f"# composition overhead — {machine()}, size={args.size}, dtype={args.dtype}, batch={args.batch}, "
          f"{patches} visual + {args.text - 1} text tokens")
    print("| pass | ours (ms) | HF LLaVA (ms) | ours / HF |")
    print("|---|---|---|---|")
    for name, mine, theirs in (("forward", ours_forward, hf_forward), ("forward+backward", ours_backward, hf_backward)):
        # interleave the two so drift in machine load hits both equally
        a = median_seconds(mine, device, args.repeats)
        b = median_seconds(theirs, device, args.repeats)
        a = min(a, median_seconds(mine, device, args.repeats, warmup=0))
        b = min(b, median_seconds(theirs, device, args.repeats, warmup=0))
        print(f"| {name} | {1000 * a:.1f} | {1000 * b:.1f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()
