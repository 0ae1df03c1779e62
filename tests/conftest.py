"""Shared fixtures: tiny random models (widths 32-64, 2 layers, 64 px) and synthetic batches. No network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tokencompose.data.datamodule import SyntheticShapes
from tokencompose.data.processing import Collator, ImageTransform, SampleProcessor
from tokencompose.data.shards import decode_sample, encode_npy, encode_png
from tokencompose.data.synthetic import ShapesGenerator, shapes_text_tokenizer
from tokencompose.encoders import HFCLIPEncoder, OpenCLIPEncoder
from tokencompose.llm import CausalLM, VicunaV1Template
from tokencompose.model import VLM
from tokencompose.scalers import MeanStdScaler
from tokencompose.tokenizers import GlobalTokenizer, ObjectTokenizer, PatchPoolTokenizer
from tokencompose.types import VLMBatch

REPO = Path(__file__).resolve().parents[1]

TINY_HF_CLIP = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    image_size=64, patch_size=8, projection_dim=32,
)
TINY_OPEN_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, patch_size=8, width=64, layers=2, head_width=16),
    text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
)
TINY_LLAMA = dict(
    model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
)


TINY_DETR = dict(
    use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
    backbone_config=dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                         out_features=["stage2", "stage3", "stage4"]),
    d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
    encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=12, num_labels=3, num_feature_levels=3,
    encoder_n_points=2, decoder_n_points=2,
)
TINY_SAM = dict(image_size=64, patch_size=8, width=32, depth=1, heads=2, prompt_dim=16)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def text_tokenizer():
    return shapes_text_tokenizer()


@pytest.fixture
def hf_encoder() -> HFCLIPEncoder:
    return HFCLIPEncoder(config=TINY_HF_CLIP)


@pytest.fixture
def open_clip_encoder() -> OpenCLIPEncoder:
    return OpenCLIPEncoder(config=TINY_OPEN_CLIP)


@pytest.fixture
def tiny_llm(text_tokenizer) -> CausalLM:
    return CausalLM(text_tokenizer=text_tokenizer, config=TINY_LLAMA)


def build_mask_llava(text_tokenizer, **overrides: Any) -> VLM:
    """A tiny Mask-LLaVA composition: CLS + 2x2 patches + up to 4 objects, mean/std scaled."""
    parts: dict[str, Any] = dict(
        encoder=HFCLIPEncoder(config=TINY_HF_CLIP),
        tokenizers={
            "cls": GlobalTokenizer(),
            "patch": PatchPoolTokenizer(grid=2),
            "objects": ObjectTokenizer(max_objects=4),
        },
        scaler=MeanStdScaler(),
        llm=CausalLM(text_tokenizer=text_tokenizer, config=TINY_LLAMA),
        template=VicunaV1Template(),
        max_length=128,
        max_new_tokens=3,
    )
    parts.update(overrides)
    return VLM(**parts)


@pytest.fixture
def mask_llava(text_tokenizer) -> VLM:
    return build_mask_llava(text_tokenizer)


def raw_samples(count: int, seed: int = 0, image_size: int = 64) -> list[dict[str, Any]]:
    """Synthetic samples in their shard form, decoded as the stream would decode them."""
    generator = ShapesGenerator(image_size=image_size, seed=seed)
    out = []
    for i in range(count):
        encoded = SyntheticShapes._encode(generator, i)
        out.append(decode_sample(encoded))
    return out


@pytest.fixture
def make_batch() -> Callable[..., VLMBatch]:
    """make_batch(model, count, seed) -> a VLMBatch of synthetic samples processed for ``model``."""

    def make(model: VLM, count: int = 4, seed: int = 0) -> VLMBatch:
        encoder = model.encoder
        processor = SampleProcessor(
            ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std), model.conversation_encoder()
        )
        collate = Collator(pad_token_id=model.llm.text_tokenizer.pad_token_id)
        return collate([processor(s) for s in raw_samples(count, seed)])

    return make


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Small synthetic shards, written once per test session."""
    root = tmp_path_factory.mktemp("synthetic")
    SyntheticShapes(root=str(root), train_samples=96, val_samples=32, samples_per_shard=32).write()
    return root


__all__ = ["encode_npy", "encode_png"]
