"""Hugging Face LLaVA, both ways, on tiny random weights.

Expected behaviour re-derived from transformers 5.23 (installed): ``models/llava/modeling_llava.py``
(``LlavaModel.get_image_features``: ``vision_feature_layer`` int or list -> hidden states concatenated on the
width, ``vision_feature_select_strategy`` "default" drops CLS, "full" keeps it; ``LlavaMultiModalProjector``:
``multimodal_projector_bias``, ``projector_hidden_act``), ``models/llava/processing_llava.py`` (``LlavaProcessor``)
``models/llava/image_processing_pil_llava.py`` (``do_pad``) and ``pipelines/image_text_to_text.py``. The HF
classes run here, so every check compares with them numerically.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    pipeline,
)

from tests.conftest import TINY_HF_CLIP, TINY_LLAMA, build_mask_llava
from tokencompose.data.processing import Collator, ImageTransform, SampleProcessor
from tokencompose.encoders import HFCLIPEncoder
from tokencompose.export import load_hf_llava, save_hf_llava
from tokencompose.llm import IMAGE_TOKEN_ID, CausalLM, PlainTemplate, VicunaV1Template, fuse_visual_tokens
from tokencompose.llm.generation import greedy_generate
from tokencompose.model import VLM
from tokencompose.projectors import MLPProjector
from tokencompose.tokenizers import GlobalTokenizer, PatchPoolTokenizer

PATCHES = 64  # 8 x 8 grid of the tiny 64 px / patch 8 CLIP
VISION = {k: v for k, v in TINY_HF_CLIP.items() if k != "projection_dim"}
TEXT = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}

# (vision_feature_select_strategy, vision_feature_layer, multimodal_projector_bias, projector_hidden_act):
# both strategies, one layer and a list, with and without bias, every activation we offer.
CASES = [
    ("default", -2, True, "gelu"),
    ("full", -2, False, "silu"),
    ("default", [-2, -5], False, "quick_gelu"),
    ("full", [-1, 0], True, "relu"),
    ("default", -3, True, "gelu_pytorch_tanh"),
]
CASE_IDS = ["-".join(str(part) for part in case) for case in CASES]


def hf_llava(text_tokenizer, strategy="default", layer=-2, bias=True, act="gelu", blocks=4, dtype=None):
    """A random HF LLaVA (4 CLIP blocks so [-2, -5] exists) with every tensor random, biases included."""
    text = LlamaConfig(
        **TEXT, vocab_size=len(text_tokenizer) + 1, bos_token_id=text_tokenizer.bos_token_id,
        eos_token_id=text_tokenizer.eos_token_id, pad_token_id=text_tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**{**VISION, "num_hidden_layers": blocks}).to_dict(),
        text_config=text.to_dict(),
        image_token_index=len(text_tokenizer),
        vision_feature_select_strategy=strategy,
        vision_feature_layer=layer,
        multimodal_projector_bias=bias,
        projector_hidden_act=act,
    )
    torch.manual_seed(1)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # HF zeroes biases at init; a mapped-wrong bias must show
            p.add_(torch.randn_like(p) * 0.05)
    return model.to(dtype) if dtype is not None else model


def composition(text_tokenizer, strategy="default", layer=-2, bias=True, act="gelu", blocks=4) -> VLM:
    """Our own LLaVA-1.5-shaped composition, built from parts (CLIP with its projection, which LLaVA drops)."""
    full = strategy == "full"
    tokenizers = {"cls": GlobalTokenizer(source="cls"), "patch": PatchPoolTokenizer()} if full else {
        "patch": PatchPoolTokenizer()
    }
    return VLM(
        encoder=HFCLIPEncoder(config={**TINY_HF_CLIP, "num_hidden_layers": blocks}, select_layer=layer),
        tokenizers=tokenizers,
        llm=CausalLM(text_tokenizer=text_tokenizer, config=TINY_LLAMA),
        projector=functools.partial(MLPProjector, bias=bias, activation=act),
    ).eval()


def prompts(text_tokenizer):
    first = text_tokenizer("is there a red circle ?", add_special_tokens=False).input_ids
    second = text_tokenizer("how many shapes are there ? USER : what color is the square ?", add_special_tokens=False).input_ids
    return [[2, IMAGE_TOKEN_ID, *first], [2, IMAGE_TOKEN_ID, *second]]


def our_logits(vlm, rows, pixels):
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    visual = vlm.encode_images(pixels)
    fused = fuse_visual_tokens(ids, vlm.llm.embed(ids), mask, visual.tokens, visual.valid, IMAGE_TOKEN_ID)
    return vlm.llm(fused.inputs_embeds, fused.attention_mask, fused.position_ids).logits, fused.attention_mask


def hf_logits(model, rows, pixels):
    config = model.config
    tokens = PATCHES + (config.vision_feature_select_strategy == "full")  # "full" keeps CLS as a token
    image = config.image_token_index
    expanded = [[t for i in r for t in ([image] * tokens if i == IMAGE_TOKEN_ID else [i])] for r in rows]
    length = max(len(r) for r in expanded)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in expanded])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in expanded])
    return model(input_ids=ids, pixel_values=pixels.to(model.dtype), attention_mask=mask).logits


def assert_same_logits(vlm, model, text_tokenizer, **tolerance):
    rows = prompts(text_tokenizer)
    pixels = torch.randn(2, 3, 64, 64)
    ours, mask = our_logits(vlm, rows, pixels.to(next(vlm.parameters()).dtype))
    theirs = hf_logits(model, rows, pixels)
    keep, vocab = mask.bool(), len(text_tokenizer)
    assert keep.sum().item() == sum(len(r) - 1 for r in rows) + 2 * (PATCHES + (len(vlm.tokenizers) == 2))
    assert_close(ours[keep][:, :vocab], theirs[keep][:, :vocab], **(tolerance or dict(atol=1e-5, rtol=1e-4)))


# ------------------------------------------------------------------------------------------- parity both ways
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@torch.no_grad()
def test_loaded_llava_gives_the_same_logits(case, tmp_path, text_tokenizer):
    model = hf_llava(text_tokenizer, *case)
    model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    vlm = load_hf_llava(str(tmp_path)).eval()
    assert list(vlm.tokenizers) == (["cls", "patch"] if case[0] == "full" else ["patch"])
    assert_same_logits(vlm, model, text_tokenizer)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@torch.no_grad()
def test_exported_llava_gives_the_same_logits(case, tmp_path, text_tokenizer):
    strategy, layer, bias, act = case
    vlm = composition(text_tokenizer, *case)
    save_hf_llava(vlm, str(tmp_path))
    exported = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    config = exported.config
    assert (config.vision_feature_select_strategy, config.vision_feature_layer) == (strategy, layer)
    assert (config.multimodal_projector_bias, config.projector_hidden_act) == (bias, act)
    assert config.image_seq_length == PATCHES + (strategy == "full")
    assert_same_logits(vlm, exported, text_tokenizer)


def test_load_names_the_config_keys_it_cannot_represent(tmp_path, text_tokenizer):
    model = hf_llava(text_tokenizer, act="tanh", layer=[-2, 7])
    model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"vision_feature_layer=\[-2, 7\].*projector_hidden_act='tanh'"):
        load_hf_llava(str(tmp_path))


def test_export_refuses_other_schemes(text_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="PatchPoolTokenizer.*scaler"):
        save_hf_llava(build_mask_llava(text_tokenizer), str(tmp_path))
    plain = composition(text_tokenizer)
    plain.template = PlainTemplate()
    with pytest.raises(ValueError, match="template is PlainTemplate: give `chat_template`"):
        save_hf_llava(plain, str(tmp_path / "plain"))
    save_hf_llava(plain, str(tmp_path / "plain"), chat_template="{{ bos_token }}<image>")
    mixed = composition(text_tokenizer)
    mixed.llm.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"several dtypes \['bfloat16', 'float32'\]"):
        save_hf_llava(mixed, str(tmp_path / "mixed"))


# ------------------------------------------------------------------------------------------- one dtype
@torch.no_grad()
def test_load_gives_the_whole_model_one_dtype(tmp_path, text_tokenizer):
    model = hf_llava(text_tokenizer, strategy="full", dtype=torch.bfloat16)
    model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    vlm = load_hf_llava(str(tmp_path)).eval()  # the saved dtype, as from_pretrained reads it
    parts = {name: {p.dtype for p in getattr(vlm, name).parameters()} for name in ("encoder", "projectors", "llm")}
    assert parts == {"encoder": {torch.bfloat16}, "projectors": {torch.bfloat16}, "llm": {torch.bfloat16}}
    rotary = dict(vlm.llm.model.named_buffers())["model.rotary_emb.inv_freq"]
    assert rotary.dtype == torch.float32  # kept in float32, as Hugging Face's own bf16 model keeps it
    reference = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert_same_logits(vlm, reference, text_tokenizer, atol=1e-3, rtol=1e-3)  # same bf16 ops: equal here
    half = load_hf_llava(str(tmp_path), dtype="float16")
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    with pytest.raises(ValueError, match="dtype='bf16'"):
        load_hf_llava(str(tmp_path), dtype="bf16")
    out = tmp_path / "exported"
    save_hf_llava(vlm, str(out))
    assert LlavaForConditionalGeneration.from_pretrained(out).dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------- the folder
def file_hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@torch.no_grad()
def test_two_exports_are_byte_identical(tmp_path, text_tokenizer):
    vlm = composition(text_tokenizer)
    first, second = tmp_path / "first", tmp_path / "second"
    save_hf_llava(vlm, str(first))
    torch.manual_seed(123)  # a different random state must not matter
    save_hf_llava(vlm, str(second))
    hashes = file_hashes(first)
    assert {"model.safetensors", "config.json", "processor_config.json", "chat_template.jinja"} <= set(hashes)
    assert hashes == file_hashes(second)
    exported = LlavaForConditionalGeneration.from_pretrained(first)
    image = exported.config.image_token_index
    assert image == len(text_tokenizer)  # added after the existing vocabulary
    for weight in (exported.lm_head.weight, exported.get_input_embeddings().weight):
        assert_close(weight[image], weight[:image].mean(0))  # the documented choice: the mean of the others


def our_prompt_text(template, conversation, text_tokenizer) -> str:
    segments = template.segments(conversation, text_tokenizer, add_generation_prompt=True)
    return text_tokenizer.bos_token + "".join(segment.text for segment in segments)


@pytest.mark.parametrize("system", [None, 'odd "quotes" \\ {{ braces }} %} é 😀\nnewline'])
def test_chat_template_renders_our_prompt(system, tmp_path, text_tokenizer):
    vlm = composition(text_tokenizer)
    if system is not None:
        vlm.template = VicunaV1Template(system=system)
    save_hf_llava(vlm, str(tmp_path))
    processor = AutoProcessor.from_pretrained(tmp_path)
    conversation = [
        {"from": "human", "value": "<image>\nis there a red circle ?"},
        {"from": "gpt", "value": "yes"},
        {"from": "human", "value": "what color is the square ?"},
    ]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "is there a red circle ?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "yes"}]},
        {"role": "user", "content": "what color is the square ?"},
    ]
    ours = our_prompt_text(vlm.template, conversation, text_tokenizer)
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == ours
    with_system = [{"role": "system", "content": "be brief ."}, *messages]
    assert processor.apply_chat_template(with_system) == our_prompt_text(
        VicunaV1Template(system="be brief ."), conversation, text_tokenizer
    )
    with pytest.raises(Exception, match="turn 1 has role user, expected assistant"):
        processor.apply_chat_template([messages[0], messages[0]])


def random_image(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_processor_gives_our_pixels_and_prompt_ids(strategy, tmp_path, text_tokenizer):
    vlm = composition(text_tokenizer, strategy=strategy, blocks=2)
    save_hf_llava(vlm, str(tmp_path))
    encoder = vlm.encoder
    transform = ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std)
    wide = random_image(40, 90)  # our pad-to-square + bicubic resize: the PIL backend does exactly that
    pil = AutoProcessor.from_pretrained(tmp_path, backend="pil")
    assert_close(pil.image_processor(images=wide, return_tensors="pt").pixel_values[0], transform(wide)[0])
    processor = AutoProcessor.from_pretrained(tmp_path)  # torchvision backend: same pixels at the encoder's size
    square = random_image(64, 64)
    messages = [{"role": "user", "content": [{"type": "image", "image": square}, {"type": "text", "text": "is there a red circle ?"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert_close(inputs["pixel_values"][0], transform(square)[0], atol=1e-6, rtol=0)
    conversation = [{"from": "human", "value": "<image>\nis there a red circle ?"}]
    ours = vlm.conversation_encoder().encode(conversation, add_generation_prompt=True).input_ids
    image = processor.tokenizer.convert_tokens_to_ids("<image>")
    tokens = sum(vlm.visual_tokens_per_image().values())
    expanded = [t for i in ours for t in ([image] * tokens if i == IMAGE_TOKEN_ID else [i])]
    assert inputs["input_ids"][0].tolist() == expanded


def our_greedy_answer(vlm: VLM, image: Image.Image, question: str, max_new_tokens: int) -> list[int]:
    """Our data pipeline and decoding: SampleProcessor + Collator -> fused prompt -> greedy_generate."""
    encoder = vlm.encoder
    process = SampleProcessor(ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std),
                              vlm.conversation_encoder())
    record = {"conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": "yes"}]}
    batch = Collator(pad_token_id=vlm.llm.text_tokenizer.pad_token_id)([process({"__key__": "q", "json": record, "png": image})])
    return greedy_generate(vlm.llm, vlm.fuse(batch, for_generation=True), max_new_tokens)[0].tolist()


@pytest.mark.parametrize("strategy", ["default", "full"])
@torch.no_grad()
def test_pipeline_answers_as_our_model_does(strategy, tmp_path, text_tokenizer):
    vlm = composition(text_tokenizer, strategy=strategy, blocks=2)
    head, eos = vlm.llm.model.lm_head.weight, text_tokenizer.eos_token_id
    head[eos] = torch.cat([head[:eos], head[eos + 1 :]]).mean(0)  # EOS never greedy: both answers run full length
    save_hf_llava(vlm, str(tmp_path))
    image, question, steps = random_image(64, 64, seed=3), "is there a red circle ?", 6  # square, encoder-sized
    ours = our_greedy_answer(vlm, image, question, steps)
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    generated = pipe(text=messages, max_new_tokens=steps, return_tensors=True)[0]["generated_token_ids"]
    assert generated[-steps:].tolist() == ours
    assert len(set(ours)) > 1  # a real answer, not one token repeated
