"""Every full-size recipe builds on the meta device from the shipped published configurations: no weights, no
network. Parameter counts are checked against closed-form counts of the published architectures (written out
here from the architecture numbers, not read from the built models), and the well-known totals: LLaVA-1.5-7B
7.06 B, Vicuna-7B 6.74 B, Llama-3.1-8B 8.03 B, SAM ViT-H 641 M, Deformable DETR R50 40 M (its paper's Table 1).
"""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from tests.recipe_utils import RECIPES, REPO
from tokencompose.model_configs import (
    in_meta_build,
    meta_build,
    published_config,
    shipped,
    stand_in_text_tokenizer,
)
from tokencompose.recipes import build_annotate_job, build_recipe, model_from_args
from tokencompose.strategies import fsdp

FULL_SIZE = [r for r in RECIPES if "tiny" not in r.parts]


def llama_parameters(vocab: int, width: int, ffn: int, layers: int, heads: int, kv_heads: int) -> int:
    """Embedding + layers (q, o: D x D; k, v: D x kv width; gate, up, down; two RMSNorms) + final norm + head."""
    kv = width // heads * kv_heads
    layer = 2 * width * width + 2 * width * kv + 3 * width * ffn + 2 * width
    return 2 * vocab * width + layers * layer + width


def clip_vision_parameters(width: int, ffn: int, layers: int, patch: int, image: int, projection: int | None) -> int:
    """Patch convolution (no bias), class + position embeddings, pre/post LayerNorm, blocks (q, k, v, o with bias,
    fc1, fc2, two LayerNorms), the optional projection (no bias)."""
    tokens = (image // patch) ** 2 + 1
    block = 4 * (width * width + width) + (width * ffn + ffn) + (ffn * width + width) + 4 * width
    total = 3 * patch * patch * width + width + tokens * width + 4 * width + layers * block
    return total + (width * projection if projection else 0)


VICUNA_7B = llama_parameters(32000, 4096, 11008, 32, 32, 32)
LLAMA31_8B = llama_parameters(128256, 4096, 14336, 32, 32, 8)
CLIP_L336 = clip_vision_parameters(1024, 4096, 24, 14, 336, None)
CLIP_L336_PROJ = clip_vision_parameters(1024, 4096, 24, 14, 336, 768)
MLP2X = 1024 * 4096 + 4096 + 4096 * 4096 + 4096  # LLaVA's mlp2x_gelu: 20.99 M


def parts(model) -> dict[str, tuple[int, int]]:
    """part -> (parameters, trainable parameters)."""
    return {name: (sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.parameters() if p.requires_grad))
            for name, m in model.named_children()}


def test_closed_forms_match_the_published_totals():
    assert round(VICUNA_7B / 1e9, 2) == 6.74 and round(LLAMA31_8B / 1e9, 2) == 8.03
    assert round(CLIP_L336 / 1e6, 1) == 303.5 and round((CLIP_L336 + VICUNA_7B + MLP2X) / 1e9, 2) == 7.06
    assert round(MLP2X / 1e6, 2) == 20.98


@pytest.mark.parametrize("recipe", FULL_SIZE, ids=lambda p: p.name)
def test_every_full_size_recipe_builds_on_meta(recipe):
    cli = build_recipe(["--config", str(recipe)], meta=True)
    model = cli.model
    assert not in_meta_build()  # the context ends with the build
    devices = {p.device.type for p in model.parameters()}
    assert devices == {"meta"}, f"{recipe.name}: parameters on {devices}: weights were read or made"
    counts = parts(model)
    llm = cli.config.model.llm.init_args.name_or_path
    assert counts["llm"][0] == {"lmsys/vicuna-7b-v1.5": VICUNA_7B, "meta-llama/Llama-3.1-8B-Instruct": LLAMA31_8B}[llm]
    with_projection = cli.config.model.encoder.init_args.with_projection
    assert counts["encoder"] == (CLIP_L336_PROJ if with_projection else CLIP_L336, 0)  # frozen
    assert {p.dtype for p in model.llm.parameters()} == {torch.bfloat16}  # the recipe's `dtype`
    hidden = model.llm.hidden_size
    for projector in model.projectors.values():  # widths from the parts they join
        linears = [m for m in projector.modules() if isinstance(m, torch.nn.Linear)]
        assert linears[0].in_features in (1024, 768) and linears[-1].out_features == hidden == 4096
    strategy = cli.config.trainer.strategy
    if getattr(strategy, "class_path", None) == "tokencompose.strategies.fsdp":
        policy = fsdp(**strategy.init_args.as_dict()).kwargs["auto_wrap_policy"]
        assert policy(model, True, 0) and policy.classes == {LlamaDecoderLayer}  # resolved from the LLM built
        units = [m for m in model.modules() if policy(m, False, 0)]
        prefusion = len(getattr(model.text_fusion, "layers", []))
        assert len(units) == 32 + prefusion and all(isinstance(u, LlamaDecoderLayer) for u in units)


def test_llava15_and_mask_llava_parts_and_tokens():
    stage1 = build_recipe(["--config", str(REPO / "recipes/llava15_stage1.yaml")], meta=True).model
    assert parts(stage1)["projectors"] == (MLP2X, MLP2X) and parts(stage1)["llm"] == (VICUNA_7B, 0)
    assert sum(p.numel() for p in stage1.parameters() if p.requires_grad) == MLP2X  # stage 1 trains the projector
    assert stage1.visual_tokens_per_image() == {"patch": 576}
    stage2 = build_recipe(["--config", str(REPO / "recipes/llava15_stage2.yaml")], meta=True).model
    assert parts(stage2)["llm"] == (VICUNA_7B, VICUNA_7B)
    mask = build_recipe(["--config", str(REPO / "recipes/mask_llava_stage2.yaml")], meta=True).model
    assert mask.visual_tokens_per_image() == {"cls": 1, "patch": 36, "objects": 20}
    assert mask.visual_tokens_per_image(training=True) == {"cls": 1, "patch": 36, "objects": 32}


@pytest.mark.parametrize("name", ["llava_mini.yaml", "llava_mini_llama31.yaml"])
def test_llava_mini_one_token_and_prefusion_layers_of_the_llm(name):
    model = build_recipe(["--config", str(REPO / "recipes" / name)], meta=True).model
    assert model.visual_tokens_per_image() == {"compressed": 1}  # the 576 patches feed pre-fusion only
    layer = model.llm.decoder_layers()[0]
    assert len(model.text_fusion.layers) == 4
    assert sum(p.numel() for p in model.text_fusion.layers.parameters()) == 4 * sum(p.numel() for p in layer.parameters())


def test_annotate_front_end_builds_on_meta():
    job = build_annotate_job(["--config", str(REPO / "recipes/annotate/detr_sam_vit_h.yaml")], meta=True)
    proposer = job.annotator.proposer
    assert sum(p.numel() for p in job.encoder.parameters()) == CLIP_L336_PROJ
    sam = sum(p.numel() for p in proposer.sam.parameters())
    detector = sum(p.numel() for p in proposer.detector.parameters())
    assert round(sam / 1e6) == 641 and round(detector / 1e6) == 40
    assert {p.device.type for p in proposer.sam.parameters()} == {"meta"}


def test_published_configs_and_stand_in_tokenizer():
    assert {"lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336", "meta-llama/Llama-3.1-8B-Instruct",
            "SenseTime/deformable-detr"} <= set(shipped())
    assert published_config("lmsys/vicuna-7b-v1.5")["intermediate_size"] == 11008
    tokenizer = stand_in_text_tokenizer("lmsys/vicuna-7b-v1.5")
    assert len(tokenizer) == 32000 and (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    with pytest.raises(ValueError, match="no published configuration of 'org/unknown'.*shipped"):
        published_config("org/unknown")


def test_a_part_without_a_shipped_config_names_it():
    from tokencompose.llm import CausalLM

    with meta_build(), pytest.raises(ValueError, match="org/unknown"):
        CausalLM(text_tokenizer=stand_in_text_tokenizer("lmsys/vicuna-7b-v1.5"), name_or_path="org/unknown")
    with pytest.raises(ValueError, match="no weights to load"):
        model_from_args(["--config", str(REPO / "recipes/llava15_stage1.yaml")], checkpoint="x.ckpt", meta=True)
