"""Hugging Face ``LlavaForConditionalGeneration`` <-> the LLaVA-1.5 composition (HF CLIP, all patches, mlp2x_gelu)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerBase

from tokencompose.encoders.hf_clip import HFCLIPEncoder
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.text_tokenizer import load_text_tokenizer
from tokencompose.model import VLM
from tokencompose.projectors.base import MLPProjector
from tokencompose.scalers.base import NoScaler
from tokencompose.tokenizers.patch_pool import PatchPoolTokenizer

IMAGE_TOKEN = "<image>"


def _check_llava_config(config: LlavaConfig) -> None:
    problems = []
    if config.vision_feature_select_strategy != "default":
        problems.append(f"vision_feature_select_strategy={config.vision_feature_select_strategy!r} (need 'default')")
    if not isinstance(config.vision_feature_layer, int):
        problems.append(f"vision_feature_layer={config.vision_feature_layer!r} (need one layer)")
    if config.projector_hidden_act != "gelu" or not config.multimodal_projector_bias:
        problems.append("projector is not mlp2x_gelu with bias")
    if config.vision_config.model_type != "clip_vision_model":
        problems.append(f"vision tower {config.vision_config.model_type!r} (need clip_vision_model)")
    if problems:
        raise ValueError("not a LLaVA-1.5-shaped checkpoint: " + "; ".join(problems))


def load_hf_llava(path: str, text_tokenizer: PreTrainedTokenizerBase | None = None, **vlm_options) -> VLM:
    """A ``save_pretrained`` LLaVA directory -> ``VLM`` with the same weights (and the same logits).

    The text tokenizer is read from ``path`` unless given. ``vlm_options`` go to ``VLM`` (template, ...).
    """
    hf = LlavaForConditionalGeneration.from_pretrained(path)
    config = hf.config
    _check_llava_config(config)
    tokenizer = text_tokenizer if text_tokenizer is not None else load_text_tokenizer(path)
    encoder = HFCLIPEncoder(
        config=config.vision_config.to_dict(), with_projection=False, select_layer=config.vision_feature_layer
    )
    encoder.model.load_state_dict(hf.model.vision_tower.state_dict())
    llm = CausalLM(text_tokenizer=tokenizer, config=config.text_config.to_dict())
    language = {f"model.{k}": v for k, v in hf.model.language_model.state_dict().items()}
    language.update({f"lm_head.{k}": v for k, v in hf.lm_head.state_dict().items()})
    llm.model.load_state_dict(language)
    vlm = VLM(
        encoder=encoder,
        tokenizers={"patch": PatchPoolTokenizer(grid=None)},
        llm=llm,
        projector=MLPProjector,
        **vlm_options,
    )
    projector = hf.model.multi_modal_projector
    mlp = vlm.projectors["shared"].layers
    mlp[0].load_state_dict(projector.linear_1.state_dict())
    mlp[2].load_state_dict(projector.linear_2.state_dict())
    return vlm


def _llava_shape_problems(vlm: VLM) -> list[str]:
    problems = []
    if not isinstance(vlm.encoder, HFCLIPEncoder):
        problems.append(f"encoder is {type(vlm.encoder).__name__} (need HFCLIPEncoder)")
    tokenizers = list(vlm.tokenizers.values())
    if len(tokenizers) != 1 or not isinstance(tokenizers[0], PatchPoolTokenizer) or tokenizers[0].grid not in (
        None,
        vlm.encoder.grid_size,
    ):
        problems.append("visual tokenizers must be exactly one PatchPoolTokenizer keeping all patches")
    if not isinstance(vlm.scaler, NoScaler):
        problems.append(f"scaler is {type(vlm.scaler).__name__} (need none)")
    projector = vlm.projectors["shared"] if "shared" in vlm.projectors else None
    if not isinstance(projector, MLPProjector) or len(projector.layers) != 3:
        problems.append("projector must be one shared MLPProjector of depth 2 (mlp2x_gelu)")
    if hasattr(vlm.llm.model, "peft_config"):
        problems.append("LLM has LoRA adapters: merge them first (model.merge_and_unload())")
    return problems


@torch.no_grad()
def save_hf_llava(vlm: VLM, path: str) -> LlavaForConditionalGeneration:
    """Write a LLaVA-1.5-shaped ``VLM`` as a Hugging Face LLaVA directory (weights, config, text tokenizer).

    ``<image>`` is added to the text tokenizer (and a row to the embeddings) if it is not there yet.
    """
    problems = _llava_shape_problems(vlm)
    if problems:
        raise ValueError("this composition is not LLaVA-1.5-shaped: " + "; ".join(problems))
    tokenizer = copy.deepcopy(vlm.llm.text_tokenizer)  # the caller's tokenizer stays as it is
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text_config = vlm.llm.model.config
    vision_model = vlm.encoder.model
    config = LlavaConfig(
        vision_config=vision_model.config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_index,
        vision_feature_layer=vlm.encoder.select_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    config.text_config.vocab_size = max(text_config.vocab_size, image_token_index + 1)
    hf = LlavaForConditionalGeneration(config)
    tower = hf.model.vision_tower
    vision_state = {k.removeprefix("vision_model."): v for k, v in vision_model.state_dict().items()}
    tower.load_state_dict({k: vision_state[k] for k in tower.state_dict()})  # KeyError if one is missing
    mlp = vlm.projectors["shared"].layers
    hf.model.multi_modal_projector.linear_1.load_state_dict(mlp[0].state_dict())
    hf.model.multi_modal_projector.linear_2.load_state_dict(mlp[2].state_dict())
    language = vlm.llm.model.state_dict()
    rows = text_config.vocab_size
    for name, target in (("model.embed_tokens.weight", hf.model.language_model.embed_tokens.weight),
                         ("lm_head.weight", hf.lm_head.weight)):
        target[:rows] = language[name]
    hf.model.language_model.load_state_dict(
        {k.removeprefix("model."): v for k, v in language.items() if k.startswith("model.") and "embed_tokens" not in k},
        strict=False,
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return hf
