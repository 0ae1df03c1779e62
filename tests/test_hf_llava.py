"""Parity with Hugging Face LlavaForConditionalGeneration on tiny random weights."""

import pytest
import torch
from torch.testing import assert_close
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from tests.conftest import TINY_HF_CLIP, TINY_LLAMA, build_mask_llava
from tokencompose.export import load_hf_llava, save_hf_llava
from tokencompose.llm import IMAGE_TOKEN_ID, fuse_visual_tokens

PATCHES = 64  # 8 x 8 grid of the tiny 64 px / patch 8 CLIP


@pytest.fixture
def hf_llava_dir(tmp_path, text_tokenizer):
    image_token_index = len(text_tokenizer)
    text = {k: v for k, v in TINY_LLAMA.items() if k != "model_type"}
    vision = {k: v for k, v in TINY_HF_CLIP.items() if k != "projection_dim"}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision).to_dict(),
        text_config=LlamaConfig(**text, vocab_size=len(text_tokenizer) + 1).to_dict(),
        image_token_index=image_token_index,
    )
    torch.manual_seed(1)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    return tmp_path, model, image_token_index


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


def hf_logits(model, rows, pixels, image_token_index):
    expanded = [[t for i in r for t in ([image_token_index] * PATCHES if i == IMAGE_TOKEN_ID else [i])] for r in rows]
    length = max(len(r) for r in expanded)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in expanded])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in expanded])
    return model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits


@torch.no_grad()
def test_loaded_llava_gives_the_same_logits(hf_llava_dir, text_tokenizer):
    path, model, image_token_index = hf_llava_dir
    vlm = load_hf_llava(str(path)).eval()
    rows = prompts(text_tokenizer)
    pixels = torch.randn(2, 3, 64, 64)
    ours, mask = our_logits(vlm, rows, pixels)
    theirs = hf_logits(model, rows, pixels, image_token_index)
    keep = mask.bool()
    assert_close(ours[keep][:, : len(text_tokenizer)], theirs[keep][:, : len(text_tokenizer)], atol=1e-5, rtol=1e-4)
    assert keep.sum(1).tolist() == [len(rows[0]) + PATCHES - 1, len(rows[1]) + PATCHES - 1]  # padding differed


@torch.no_grad()
def test_export_round_trip(hf_llava_dir, tmp_path, text_tokenizer):
    path, _, _ = hf_llava_dir
    vlm = load_hf_llava(str(path)).eval()
    out = tmp_path / "exported"
    exported = save_hf_llava(vlm, str(out)).eval()
    rows = prompts(text_tokenizer)
    pixels = torch.randn(2, 3, 64, 64)
    ours, mask = our_logits(vlm, rows, pixels)
    theirs = hf_logits(exported, rows, pixels, exported.config.image_token_index)
    vocab = len(text_tokenizer)
    assert_close(ours[mask.bool()][:, :vocab], theirs[mask.bool()][:, :vocab], atol=1e-5, rtol=1e-4)
    reloaded = LlavaForConditionalGeneration.from_pretrained(out)
    assert reloaded.config.vision_feature_layer == -2


def test_export_refuses_other_schemes(text_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="PatchPoolTokenizer.*scaler"):
        save_hf_llava(build_mask_llava(text_tokenizer), str(tmp_path))
