"""The GPU suite: one command, random weights at real shapes, a Markdown block for benchmarks/RESULTS.md.

    uv run python benchmarks/gpu_suite.py --out gpu_block.md          # one GPU (sized for an H200, <= 8 min)
    uv run python benchmarks/gpu_suite.py --smoke                     # CPU, tiny shapes (CI; automatic on CPU)

Sections, each guarded (an OOM or error prints a row saying so and the rest run) and skipped once the time
budget (``--budget-s``, default 450 s) is spent:
1. bf16 matmul peak of this device (float32 on CPU), measured here: the MFU denominator.
2. Stage-2 training step of LLaVA-1.5-7B and Mask-LLaVA-7B (CLIP ViT-L/14-336 frozen, projector + LLM trained;
   bf16 weights and AdamW states, activation checkpointing of every decoder layer): tokens/s and MFU. FLOPs per
   step = encoder forward + 3 x (projector + LLM forward), counted by ``FlopCounterMode`` (no recomputation).
3. Prefill latency and time to first token at 7B (batch 1): LLaVA-1.5 (576 tokens), Mask-LLaVA (1 + 6x6 + 20 =
   57; 1 + 2x2 + 10 = 15), LLaVA-Mini (1 token + 4 pre-fusion layers; published 100 ms -> 40 ms).
4. The annotate front end per image: Deformable DETR R50 (800 px) + SAM ViT-H box prompts + MaskInversion fast
   (open_clip ViT-L/14-336, K = 20) through ``ObjectAnnotator``, in images/s (goal: 14 images/s on one H200).
5. MaskInversion direct vs fast at ViT-L/14-336, K = 20, next to the FLOPs-ideal speed-up.
The models are the library's own (``VLM``, ``HFCLIPEncoder``, ``CausalLM``, ``DetrSamProposer``, MaskInversion).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, machine, median_seconds  # noqa: E402
from object_tokens import ENCODERS, build_encoder, measure_one  # noqa: E402

from tokencompose.data.datamodule import SyntheticShapes  # noqa: E402
from tokencompose.data.shards import decode_sample  # noqa: E402
from tokencompose.data.synthetic import ShapesGenerator, shapes_text_tokenizer  # noqa: E402
from tokencompose.encoders import HFCLIPEncoder  # noqa: E402
from tokencompose.eval.cost import measure_cost  # noqa: E402
from tokencompose.llm import CausalLM, ModalityPreFusion  # noqa: E402
from tokencompose.masks import DetrSamProposer, MaskInversionSettings, ObjectAnnotator  # noqa: E402
from tokencompose.masks.flops import ViTShape, ideal_speedup  # noqa: E402
from tokencompose.model import VLM  # noqa: E402
from tokencompose.scalers import MeanStdScaler  # noqa: E402
from tokencompose.tokenizers import (  # noqa: E402
    GlobalTokenizer,
    MaskInversionEmbedding,
    ObjectTokenizer,
    PatchPoolTokenizer,
    QueryCompressor,
)
from tokencompose.types import ObjectMasks, VLMBatch  # noqa: E402

R50_DETR = dict(use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
                backbone_config={"model_type": "resnet", "out_features": ["stage2", "stage3", "stage4"]})


@dataclass(frozen=True)
class Shapes:
    """What one run measures at: the VLM, the front end and MaskInversion."""

    vision: dict[str, Any]  # HF CLIPVisionConfig fields
    text: dict[str, Any]  # LlamaConfig fields
    train_batch: int
    patch_grids: tuple[int, int]  # Mask-LLaVA's pooled grid at 57 and at 15 tokens
    detector: dict[str, Any]
    detector_size: int
    sam: dict[str, Any]  # DetrSamProposer's SAM argument
    inversion_encoder: str  # object_tokens.ENCODERS key
    masks: int
    front_end_batch: int
    matmul_side: int
    iterations: int  # MaskInversion steps (the published 10 at real shapes)
    repeats: int  # timed runs per measurement (after one warm-up run where ``repeats`` > 1)


FULL = Shapes(
    vision={**SIZES["7b"]["vision"], "projection_dim": 768}, text=SIZES["7b"]["text"], train_batch=8,
    patch_grids=(6, 2), detector=R50_DETR, detector_size=800, sam={"sam_variant": "vit_h"},
    inversion_encoder="vit_l14_336", masks=20, front_end_batch=4, matmul_side=8192, iterations=10, repeats=3,
)
SMOKE = Shapes(
    vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=48,
                patch_size=8, projection_dim=32),
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4),
    train_batch=2, patch_grids=(6, 2),
    detector=dict(R50_DETR, backbone_config=dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 16, 16, 16],
                                                 depths=[1, 1, 1, 1], out_features=["stage2", "stage3", "stage4"]),
                  d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                  encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=12, num_feature_levels=3, encoder_n_points=2,
                  decoder_n_points=2),
    detector_size=64, sam={"sam_config": dict(image_size=64, patch_size=8, width=32, depth=1, heads=2, prompt_dim=16)},
    inversion_encoder="tiny", masks=3, front_end_batch=1, matmul_side=256, iterations=2, repeats=1,
)


class Report:
    """Markdown sections; ``guard`` runs one measurement and turns a failure or a spent budget into a row."""

    def __init__(self, budget_s: float) -> None:
        self.lines: list[str] = []
        self.start, self.budget_s = time.perf_counter(), budget_s

    def table(self, title: str, header: list[str]) -> None:
        self.lines += ["", f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.columns = len(header)
        print("\n".join(self.lines[-5:]), flush=True)

    def row(self, cells: list[Any]) -> None:
        self.lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        print(self.lines[-1], flush=True)

    def guard(self, name: str, measure: Callable[[], list[Any]]) -> None:
        elapsed = time.perf_counter() - self.start
        if elapsed > self.budget_s:
            self.row([name, f"skipped: time budget of {self.budget_s:.0f} s spent"] + [""] * (self.columns - 2))
            return
        try:
            self.row([name, *measure()])
        except Exception as error:  # noqa: BLE001 — one failure (OOM included) must not stop the suite
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
            self.row([name, f"**failed** ({message})"] + [""] * (self.columns - 2))
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def counted_flops(run: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return counter.get_total_flops()


def timed(run: Callable[[], object], device: torch.device, shapes: Shapes) -> float:
    return median_seconds(run, device, repeats=shapes.repeats, warmup=int(shapes.repeats > 1))


def matmul_peak(side: int, device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a square matmul: the best this device does on the model's main kernel."""
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    return 2 * side**3 / median_seconds(lambda: a @ b, device, repeats=10, warmup=3)


def build_vlm(encoder, llm, scheme: str, shapes: Shapes, training: bool) -> VLM:
    grid57, grid15 = shapes.patch_grids
    mask_llava = lambda grid, objects: dict(  # noqa: E731
        tokenizers={"cls": GlobalTokenizer(source="cls"), "patch": PatchPoolTokenizer(grid=grid, mode="avg"),
                    "objects": ObjectTokenizer(embedding=MaskInversionEmbedding(to_patch_width=True),
                                               max_objects=objects, train_max_objects=32 if training else None)},
        scaler=MeanStdScaler(reference="patch"))
    parts = {
        "LLaVA-1.5": dict(tokenizers={"patch": PatchPoolTokenizer(grid=None)}),
        "Mask-LLaVA (57)": mask_llava(grid57, 20),
        "Mask-LLaVA (15)": mask_llava(grid15, 10),
        "LLaVA-Mini": dict(tokenizers={"patch": PatchPoolTokenizer(grid=None),
                                       "compressed": partial(QueryCompressor, side=1, heads=4)},
                           text_fusion=partial(ModalityPreFusion, num_layers=4, context="patch")),
    }[scheme]
    return VLM(encoder=encoder, llm=llm, max_length=4096, max_new_tokens=2, **parts)


def make_batch(model: VLM, count: int, training: bool, objects: int, device: torch.device, dtype: torch.dtype) -> VLMBatch:
    """``count`` synthetic conversations through LLaVA-1.5's processor and collator (the same text and images
    for every scheme), plus ``objects`` fabricated object masks and embeddings per image (all valid, best first)."""
    side = model.encoder.image_size
    generator = ShapesGenerator(image_size=side, seed=0)
    # the text and images come through LLaVA-1.5's transform (the synthetic samples carry no object embeddings)
    plain = VLM(encoder=model.encoder, llm=model.llm, tokenizers={"patch": PatchPoolTokenizer(grid=None)}, max_length=4096)
    transform = plain.data_transform()
    processor = transform.processor(training=training)
    samples = [processor(decode_sample(SyntheticShapes._encode(generator, i))) for i in range(count)]
    batch = transform.collator()(samples)
    batch.pixels = batch.pixels.to(device, dtype)
    images = batch.pixels.shape[0]
    masks = torch.zeros(images, objects, side, side, dtype=torch.bool)
    for k in range(objects):
        x0, y0 = (7 * k) % (side // 2), (11 * k) % (side // 2)
        masks[:, k, y0 : y0 + side // 3, x0 : x0 + side // 3] = True
    scores = torch.linspace(1, 0.5, objects).expand(images, -1)
    batch.objects = ObjectMasks(masks=masks.to(device), scores=scores.to(device),
                                valid=torch.ones(images, objects, dtype=torch.bool, device=device),
                                embeddings=torch.randn(images, objects, model.encoder.embed_dim, device=device, dtype=dtype))
    for name in ("input_ids", "attention_mask", "labels", "prompt_ids", "prompt_mask", "images_per_sample"):
        setattr(batch, name, getattr(batch, name).to(device))
    return batch


def training_step(encoder, llm, scheme: str, shapes: Shapes, device, dtype, peak: float) -> list[Any]:
    with torch.device(device):  # fresh parts (projector, pre-fusion layers) are initialised where they run
        model = build_vlm(encoder, llm, scheme, shapes, training=True).to(device, dtype).train()
    batch = make_batch(model, shapes.train_batch, True, 32, device, dtype)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-5, foreach=True)

    def step() -> None:
        _, loss = model(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, device, shapes)
    with torch.no_grad():
        tokens = model.fuse(batch).attention_mask.sum().item()
    encoder_flops = counted_flops(lambda: model.encoder(batch.pixels, model.encoder_request()))  # frozen: no backward
    model_flops = counted_flops(lambda: model(batch))
    step_flops = encoder_flops + 3 * (model_flops - encoder_flops)
    optimizer.state.clear()  # frees the AdamW states before the next section
    return [shapes.train_batch, f"{tokens / shapes.train_batch:.0f}", f"{sum(p.numel() for p in trained) / 1e9:.3g}",
            f"{1000 * seconds:.0f}", f"{tokens / seconds:,.0f}", f"{step_flops / seconds / 1e12:.3g}",
            f"{100 * step_flops / seconds / peak:.1f} %"]


def prefill(encoder, llm, scheme: str, shapes: Shapes, device, dtype) -> list[Any]:
    with torch.device(device):
        model = build_vlm(encoder, llm, scheme, shapes, training=False).to(device, dtype).eval()
    batch = make_batch(model, shapes.repeats, False, 20, device, dtype)
    with torch.no_grad():
        visual = model.encode_images(batch.pixels[:1], _first(batch.objects))
        tokens = visual.valid[:, model.llm_positions(visual)].sum().item()
        cost = measure_cost(model, batch, samples=shapes.repeats, max_new_tokens=2, repeats=1, decode_steps=2)
    return [tokens, f"{cost.ms.get('prefill', 0.0):.1f}", f"{cost.ttft_ms.median:.1f}", f"{cost.gflops.get('prefill', 0.0):.3g}"]


def _first(objects: ObjectMasks) -> ObjectMasks:
    return ObjectMasks(objects.masks[:1], objects.scores[:1], objects.valid[:1], objects.embeddings[:1])


def front_end(shapes: Shapes, device) -> list[Any]:
    torch.manual_seed(0)
    with torch.device(device):
        proposer = DetrSamProposer(detector_config=shapes.detector, num_boxes=shapes.masks,
                                   detector_size=shapes.detector_size, **shapes.sam).to(device)
    encoder = build_encoder(shapes.inversion_encoder, device)
    annotator = ObjectAnnotator(proposer, MaskInversionSettings(iterations=shapes.iterations))
    pixels = torch.randn(shapes.front_end_batch, 3, encoder.image_size, encoder.image_size, device=device)
    images = pixels.clamp(0, 1)
    proposal_s = timed(lambda: proposer(images), device, shapes)
    total_s = timed(lambda: annotator(encoder, pixels), device, shapes)
    per_image = total_s / shapes.front_end_batch
    return [shapes.front_end_batch, f"{1000 * proposal_s / shapes.front_end_batch:.0f}",
            f"{1000 * (total_s - proposal_s) / shapes.front_end_batch:.0f}", f"{1000 * per_image:.0f}",
            f"{1 / per_image:.2f}"]


def inversion(shapes: Shapes, device) -> list[Any]:
    settings = MaskInversionSettings(iterations=shapes.iterations)
    results = {form: measure_one(shapes.inversion_encoder, shapes.masks, form, device.type, settings)
               for form in ("direct", "fast")}
    diff = (torch.tensor(results["direct"]["embeddings"]) - torch.tensor(results["fast"]["embeddings"])).abs().max()
    measured = results["direct"]["seconds"] / results["fast"]["seconds"]
    ideal = ideal_speedup(ViTShape.from_open_clip(**ENCODERS[shapes.inversion_encoder]), shapes.masks, settings)
    return [shapes.masks, f"{results['direct']['seconds']:.3f}", f"{results['fast']['seconds']:.3f}", f"{measured:.2f}x",
            f"{ideal:.2f}x", f"{measured / ideal:.2f}", f"{diff:.1e}"]


def run_suite(shapes: Shapes, device: torch.device, budget_s: float, smoke: bool) -> Report:
    report = Report(budget_s)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the float32 front end and MaskInversion use tensor cores
    report.lines.append(f"## GPU suite — {machine()}, {datetime.date.today()}, {'smoke (tiny shapes)' if smoke else 'real shapes'}, "
                        f"random weights, budget {budget_s:.0f} s")
    report.table("Matmul peak (the MFU denominator)", ["kernel", "TFLOP/s"])
    peak = [0.0]

    def measure_peak() -> list[Any]:
        peak[0] = matmul_peak(shapes.matmul_side, device, dtype)
        return [f"{peak[0] / 1e12:.3g}"]

    report.guard(f"{shapes.matmul_side}^3 {str(dtype).removeprefix('torch.')} matmul", measure_peak)
    parts: dict[str, Any] = {}

    def build_parts() -> None:
        torch.manual_seed(0)
        with torch.device(device):
            parts["encoder"] = HFCLIPEncoder(config=shapes.vision, with_projection=True).to(dtype)
            text = {"model_type": "llama", **shapes.text}
            parts["llm"] = CausalLM(text_tokenizer=shapes_text_tokenizer(), config=text, gradient_checkpointing=True).to(dtype)

    report.table("Stage-2 training step (projector + LLM trained, activation checkpointing)",
                 ["scheme", "batch", "tokens / sample", "trained params (B)", "step ms", "tokens/s", "TFLOP/s", "MFU"])
    for scheme in ("LLaVA-1.5", "Mask-LLaVA (57)"):
        def train(scheme: str = scheme) -> list[Any]:
            parts or build_parts()
            return training_step(parts["encoder"], parts["llm"], scheme, shapes, device, dtype, peak[0] or float("nan"))
        report.guard(scheme, train)
    report.table("Prefill and time to first token (batch 1)", ["scheme", "visual tokens", "prefill ms", "TTFT ms", "prefill GFLOPs"])
    for scheme in ("LLaVA-1.5", "Mask-LLaVA (57)", "Mask-LLaVA (15)", "LLaVA-Mini"):
        def measure(scheme: str = scheme) -> list[Any]:
            parts or build_parts()
            return prefill(parts["encoder"], parts["llm"], scheme, shapes, device, dtype)
        report.guard(scheme, measure)
    parts.clear()
    report.table("Annotate front end (float32)", ["front end", "images / call", "DETR + SAM ms / image",
                                                  "MaskInversion ms / image", "total ms / image", "images/s"])
    report.guard(f"DETR + SAM {shapes.sam.get('sam_variant', 'tiny')} + MaskInversion fast K={shapes.masks}, T={shapes.iterations}",
                 lambda: front_end(shapes, device))
    report.table(f"MaskInversion direct vs fast (float32, T = {shapes.iterations})", ["encoder", "K", "direct s", "fast s", "speed-up",
                                                                    "ideal (FLOPs)", "measured / ideal", "max abs diff"])
    report.guard(shapes.inversion_encoder, lambda: inversion(shapes, device))
    report.lines.append(f"\nSuite wall time: {time.perf_counter() - report.start:.0f} s.")
    print(report.lines[-1])
    return report


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (automatic on CPU)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="no section starts after this many seconds")
    parser.add_argument("--out", type=Path, help="also write the Markdown block here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    smoke = args.smoke or device.type == "cpu"
    report = run_suite(SMOKE if smoke else FULL, device, args.budget_s, smoke)
    if args.out:
        args.out.write_text("\n".join(report.lines) + "\n")
    return report


if __name__ == "__main__":
    main()
