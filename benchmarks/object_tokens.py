"""Object-token cost: direct (published) vs fast MaskInversion, and the whole front end vs the prefill it saves.

Part 1 — per image, K masks, T = 10 steps: time and peak memory of ``mask_inversion_direct`` (image copied per
mask, autograd through the explainability map) and ``mask_inversion_fast`` (one forward, vmap-ed VJP),
random ViT-B/16 (224 px) and ViT-L/14-336 encoders, and the fast/direct agreement; next to the measured
speed-up, the FLOPs-ideal one (``tokencompose.masks.flops.ideal_speedup``: matrix-product FLOPs of direct over
fast) and measured / ideal (1.0 = the fast form runs at the direct form's FLOP rate). Each measurement runs in
its own process so peak memory is its own (CPU: max RSS; GPU: max allocated).
Part 2 — per image: Deformable DETR (ResNet-50, 800 px), SAM box prompts (`--sam vit_b|vit_l|vit_h`),
MaskInversion (ViT-L/14-336, K = 20), next to the LLM prefill time that 57 instead of 576 tokens saves.

    uv run python benchmarks/object_tokens.py                       # CPU subset (see --sizes/--ks)
    uv run python benchmarks/object_tokens.py --device cuda --sizes vit_b16 vit_l14_336 --ks 5 20 50 --sam vit_h
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, sync  # noqa: E402

ENCODERS = {
    "tiny": dict(embed_dim=32, vision_cfg=dict(image_size=64, patch_size=8, width=64, layers=2, head_width=16)),  # smoke runs
    "vit_b16": dict(embed_dim=512, vision_cfg=dict(image_size=224, patch_size=16, width=768, layers=12, head_width=64)),
    "vit_l14_336": dict(embed_dim=768, vision_cfg=dict(image_size=336, patch_size=14, width=1024, layers=24, head_width=64)),
}
TEXT = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)


def build_encoder(size: str, device: torch.device):
    from tokencompose.encoders import OpenCLIPEncoder

    torch.manual_seed(0)
    return OpenCLIPEncoder(config=dict(**ENCODERS[size], text_cfg=TEXT)).to(device)


def masks_for(count: int, side: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count)
    masks = torch.zeros(count, side, side)
    for k in range(count):
        x0, y0 = torch.randint(0, side // 2, (2,), generator=generator).tolist()
        masks[k, y0 : y0 + side // 3, x0 : x0 + side // 3] = 1
    return masks


def measure_one(size: str, count: int, form: str, device_name: str, settings=None) -> dict:
    """Runs in a child process: one MaskInversion call (``settings``: default T = 10), its time and peak memory."""
    from tokencompose.masks.mask_inversion import mask_inversion_direct, mask_inversion_fast

    device = torch.device(device_name)
    encoder = build_encoder(size, device)
    side = encoder.image_size
    image = torch.randn(1, 3, side, side, device=device)
    masks = masks_for(count, side).to(device)
    run = (lambda: mask_inversion_fast(encoder, image, masks[None], settings=settings)[0][0]) if form == "fast" else (
        lambda: mask_inversion_direct(encoder, image, masks, settings)[0])
    if device.type == "cuda":
        run()  # warm-up (kernels, allocator)
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    embeddings = run()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_bytes": peak, "embeddings": embeddings.float().cpu().tolist()}


def part_one(args) -> None:
    print(f"## MaskInversion, direct vs fast — {machine()}, T = 10, lr 0.5, last block")
    from tokencompose.masks.flops import ViTShape, ideal_speedup, mask_inversion_flops
    from tokencompose.masks.mask_inversion import MaskInversionSettings

    print("| encoder | K | direct (s) | fast (s) | speed-up | ideal (FLOPs) | measured / ideal | direct GFLOP/s | "
          "fast GFLOP/s | direct peak (GiB) | fast peak (GiB) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for count in args.ks:
            results = {}
            for form in ("direct", "fast"):
                out = subprocess.run([sys.executable, __file__, "--child", size, str(count), form, args.device],
                                     capture_output=True, text=True, check=True)
                results[form] = json.loads(out.stdout.strip().splitlines()[-1])
            diff = (torch.tensor(results["direct"]["embeddings"]) - torch.tensor(results["fast"]["embeddings"])).abs().max()
            d, f = results["direct"], results["fast"]
            measured = d["seconds"] / f["seconds"]
            shape, settings = ViTShape.from_open_clip(**ENCODERS[size]), MaskInversionSettings()
            ideal = ideal_speedup(shape, count, settings)
            rates = [mask_inversion_flops(shape, count, settings, form) / results[form]["seconds"] / 1e9
                     for form in ("direct", "fast")]
            print(f"| {size} | {count} | {d['seconds']:.2f} | {f['seconds']:.2f} | {measured:.2f}x | {ideal:.2f}x | "
                  f"{measured / ideal:.2f} | {rates[0]:.0f} | {rates[1]:.0f} | "
                  f"{d['peak_bytes'] / 2**30:.2f} | {f['peak_bytes'] / 2**30:.2f} | {diff:.1e} |", flush=True)


def part_two(args) -> None:
    from transformers import (
        DeformableDetrConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from tokencompose.masks import DetrSamProposer
    from tokencompose.masks.mask_inversion import mask_inversion_fast

    device = torch.device(args.device)
    torch.manual_seed(0)
    detr_config = DeformableDetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
                                       backbone_config={"model_type": "resnet", "out_features": ["stage2", "stage3", "stage4"]})
    proposer = DetrSamProposer(detector_config=detr_config.to_dict(), sam_variant=args.sam, num_boxes=20, detector_size=800)
    proposer = proposer.to(device)
    encoder = build_encoder("vit_l14_336", device)
    image = torch.rand(1, 3, 336, 336, device=device)

    def timed(fn):
        fn()
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        return time.perf_counter() - start, out

    detector_s, (boxes, scores) = timed(lambda: proposer.boxes(image))
    sam_s, objects = timed(lambda: proposer(image))
    sam_s -= detector_s  # proposer(image) runs the detector again
    masks = objects.masks.float()
    inversion_s, _ = timed(lambda: mask_inversion_fast(encoder, image, masks))
    llm_size = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32) if args.llm == "7b" else \
        dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    llm = LlamaForCausalLM(LlamaConfig(**llm_size, vocab_size=32000)).to(device, dtype).eval()

    def prefill(tokens: int):
        embeds = torch.randn(1, tokens + 64, llm.config.hidden_size, device=device, dtype=dtype)
        with torch.no_grad():
            return llm(inputs_embeds=embeds, logits_to_keep=1).logits

    full_s, _ = timed(lambda: prefill(576))
    reduced_s, _ = timed(lambda: prefill(57))
    print(f"\n## Front end per image vs prefill saved — {machine()}")
    print(f"Deformable DETR (ResNet-50, 800 px, random weights): {1000 * detector_s:.0f} ms")
    print(f"SAM {args.sam} box prompts (1024 px, 20 boxes): {1000 * sam_s:.0f} ms")
    print(f"MaskInversion fast (ViT-L/14-336, K=20, T=10): {1000 * inversion_s:.0f} ms")
    print(f"front end total: {1000 * (detector_s + sam_s + inversion_s):.0f} ms per image")
    print(f"LLM ({args.llm}) prefill, 576+64 tokens: {1000 * full_s:.0f} ms; 57+64 tokens: {1000 * reduced_s:.0f} ms; "
          f"saved {1000 * (full_s - reduced_s):.0f} ms per image")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        size, count, form, device = sys.argv[2:6]
        print(json.dumps(measure_one(size, int(count), form, device)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="+", default=["vit_b16"], choices=list(ENCODERS))
    parser.add_argument("--ks", nargs="+", type=int, default=[5, 20, 50])
    parser.add_argument("--sam", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--llm", default="small", choices=["small", "7b"])
    parser.add_argument("--skip-front-end", action="store_true")
    args = parser.parse_args()
    part_one(args)
    if not args.skip_front_end:
        part_two(args)


if __name__ == "__main__":
    main()
