"""Hugging Face ``LlavaForConditionalGeneration`` <-> LLaVA-1.5-shaped compositions, both ways.

What maps to what, re-derived from transformers 5.23 ``models/llava/modeling_llava.py``
(``LlavaModel.get_image_features``, ``LlavaMultiModalProjector``):

- ``vision_feature_layer`` (an index, or a list whose hidden states are concatenated along the width)
  <-> ``HFCLIPEncoder(select_layer=...)``;
- ``vision_feature_select_strategy``: ``default`` drops CLS <-> ``{"patch": PatchPoolTokenizer()}``;
  ``full`` keeps CLS first <-> ``{"cls": GlobalTokenizer("cls"), "patch": PatchPoolTokenizer()}``, one shared
  projector (the streams are concatenated in that order before projection, as HF projects CLS + patches);
- ``multimodal_projector_bias``, ``projector_hidden_act`` <-> ``MLPProjector(depth=2, bias=, activation=)``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerBase

from tokencompose.encoders.hf_clip import HFCLIPEncoder
from tokencompose.export.hf_processor import FeatureStrategy, llava_processor, vicuna_v1_chat_template
from tokencompose.llm.base import CausalAttention, NoTextFusion, PlainDecoding
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.templates import IMAGE_PLACEHOLDER, VicunaV1Template
from tokencompose.llm.text_tokenizer import load_text_tokenizer
from tokencompose.masks.base import GivenObjects
from tokencompose.model import VLM
from tokencompose.projectors.base import ACTIVATIONS, MLPProjector
from tokencompose.scalers.base import NoScaler
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.tokenizers.global_token import GlobalTokenizer
from tokencompose.tokenizers.patch_pool import PatchPoolTokenizer


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules in ``dtype`` (as ``from_pretrained`` does), so buffers a model keeps in float32 stay so."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------------- load
def _llava_config_problems(config: LlavaConfig) -> list[str]:
    """What in ``config`` our composition cannot represent, each naming its config key."""
    problems = []
    vision = config.vision_config
    if vision.model_type != "clip_vision_model":
        problems.append(f"vision_config.model_type={vision.model_type!r} (allowed: 'clip_vision_model')")
    if config.vision_feature_select_strategy not in ("default", "full"):
        problems.append(
            f"vision_feature_select_strategy={config.vision_feature_select_strategy!r} (allowed: 'default', 'full')"
        )
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    count = getattr(vision, "num_hidden_layers", 0) + 1
    if not layers or not all(isinstance(i, int) and -count <= i < count for i in layers):
        problems.append(
            f"vision_feature_layer={config.vision_feature_layer!r} (allowed: an index or a non-empty list of "
            f"indices in [-{count}, {count - 1}])"
        )
    if config.projector_hidden_act not in ACTIVATIONS:
        problems.append(f"projector_hidden_act={config.projector_hidden_act!r} (allowed: {sorted(ACTIVATIONS)})")
    return problems


def _visual_tokenizers(strategy: FeatureStrategy) -> dict[str, VisualTokenizer]:
    patches: dict[str, VisualTokenizer] = {"patch": PatchPoolTokenizer(grid=None)}
    return {"cls": GlobalTokenizer(source="cls"), **patches} if strategy == "full" else patches


def load_hf_llava(
    path: str,
    text_tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str | torch.dtype | None = None,
    **vlm_options,
) -> VLM:
    """A ``save_pretrained`` LLaVA directory -> ``VLM`` with the same weights (and the same logits).

    Args:
        path: the directory.
        text_tokenizer: read from ``path`` unless given.
        dtype: every parameter's dtype (vision tower, projector, LLM alike), e.g. ``"bfloat16"``; by default
            the dtype the checkpoint was saved in, as ``from_pretrained`` reads it.
        vlm_options: go to ``VLM`` (template, max_length, ...).

    Raises ValueError naming every config key the composition cannot represent.
    """
    wanted = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if dtype is not None and not (isinstance(wanted, torch.dtype) and wanted.is_floating_point):
        raise ValueError(f"load_hf_llava: dtype={dtype!r}; give a floating dtype such as 'bfloat16' or 'float32'")
    problems = _llava_config_problems(LlavaConfig.from_pretrained(path))  # before reading any weights
    if problems:
        raise ValueError(f"{path}: this LLaVA config has no tokencompose equivalent: " + "; ".join(problems))
    hf = LlavaForConditionalGeneration.from_pretrained(path, dtype=wanted if wanted is not None else "auto")
    config, dtype = hf.config, hf.dtype
    tokenizer = text_tokenizer if text_tokenizer is not None else load_text_tokenizer(path)
    text = config.text_config.to_dict()
    text.update(dtype=_dtype_name(dtype), tie_word_embeddings=config.tie_word_embeddings)
    with _default_dtype(dtype):
        encoder = HFCLIPEncoder(
            config=config.vision_config.to_dict(), with_projection=False, select_layer=config.vision_feature_layer
        )
        llm = CausalLM(text_tokenizer=tokenizer, config=text)
    encoder.model.load_state_dict(hf.model.vision_tower.state_dict())
    llm.model.base_model.load_state_dict(hf.model.language_model.state_dict())
    llm.model.get_output_embeddings().load_state_dict(hf.lm_head.state_dict())
    projector = functools.partial(
        MLPProjector, depth=2, bias=config.multimodal_projector_bias, activation=config.projector_hidden_act
    )
    vlm = VLM(
        encoder=encoder,
        tokenizers=_visual_tokenizers(config.vision_feature_select_strategy),
        llm=llm,
        projector=projector,
        **vlm_options,
    )
    mlp = vlm.projectors["shared"].to(dtype).layers
    mlp[0].load_state_dict(hf.model.multi_modal_projector.linear_1.state_dict())
    mlp[2].load_state_dict(hf.model.multi_modal_projector.linear_2.state_dict())
    return vlm


# ---------------------------------------------------------------------------------------------------- save
def _feature_strategy(vlm: VLM) -> FeatureStrategy | None:
    """``default`` for all patches alone, ``full`` for the CLS token then all patches; None for anything else."""
    tokenizers = list(vlm.tokenizers.values())
    grid = getattr(vlm.encoder, "grid_size", None)

    def all_patches(tok: VisualTokenizer) -> bool:
        return isinstance(tok, PatchPoolTokenizer) and tok.grid in (None, grid)

    if len(tokenizers) == 1 and all_patches(tokenizers[0]):
        return "default"
    if len(tokenizers) == 2 and isinstance(tokenizers[0], GlobalTokenizer) and tokenizers[0].source == "cls":
        return "full" if all_patches(tokenizers[1]) else None
    return None


def export_problems(vlm: VLM, chat_template: str | None = None) -> list[str]:
    """What in ``vlm`` has no Hugging Face LLaVA equivalent, each naming the part (empty: it exports)."""
    problems = []
    if not isinstance(vlm.encoder, HFCLIPEncoder):
        problems.append(f"encoder is {type(vlm.encoder).__name__} (need HFCLIPEncoder)")
    if _feature_strategy(vlm) is None:
        problems.append(
            "visual tokenizers must be one PatchPoolTokenizer keeping all patches ('default'), or a "
            "GlobalTokenizer(source='cls') followed by one ('full')"
        )
    if not isinstance(vlm.scaler, NoScaler):
        problems.append(f"scaler is {type(vlm.scaler).__name__} (need none)")
    projector = vlm.projectors["shared"] if "shared" in vlm.projectors else None
    if not isinstance(projector, MLPProjector) or len(projector.layers) != 3:
        problems.append("projector must be one shared MLPProjector of depth 2")
    defaults = {"object_source": GivenObjects, "text_fusion": NoTextFusion, "attention": CausalAttention,
                "decoding": PlainDecoding}
    for part, default in defaults.items():
        if type(getattr(vlm, part)) is not default:
            problems.append(f"`{part}` is {type(getattr(vlm, part)).__name__} (Hugging Face LLaVA has no equivalent)")
    if hasattr(vlm.llm.model, "peft_config"):
        problems.append("LLM has LoRA adapters: merge them first (model.merge_and_unload())")
    if chat_template is None and not isinstance(vlm.template, VicunaV1Template):
        problems.append(f"template is {type(vlm.template).__name__}: give `chat_template` (Jinja) for it")
    dtypes = sorted({_dtype_name(p.dtype) for p in vlm.parameters()})
    if len(dtypes) > 1:
        problems.append(f"parameters have several dtypes {dtypes}: cast the model to one first (model.to(dtype))")
    return problems


def _grow_rows(tensor: Tensor, rows: int) -> Tensor:
    """(R, ...) -> (rows, ...): new rows are the mean of the existing ones (deterministic; see save_hf_llava)."""
    if rows <= tensor.shape[0]:
        return tensor
    mean = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype)  # (1, ...)
    return torch.cat([tensor, mean.expand(rows - tensor.shape[0], *tensor.shape[1:])])


def _llava_state(vlm: VLM, vocab: int) -> dict[str, Tensor]:
    """The VLM's tensors under ``LlavaForConditionalGeneration``'s names, embeddings grown to ``vocab`` rows."""
    state: dict[str, Tensor] = {}
    for name, value in vlm.encoder.model.state_dict().items():
        if not name.startswith("visual_projection."):  # CLIP's final projection: LLaVA never uses it
            state["model.vision_tower." + name.removeprefix("vision_model.")] = value
    mlp = vlm.projectors["shared"].layers
    for hf_name, layer in (("linear_1", mlp[0]), ("linear_2", mlp[2])):
        state.update({f"model.multi_modal_projector.{hf_name}.{k}": v for k, v in layer.state_dict().items()})
    base = vlm.llm.model.base_model  # the AutoModel part, what LLaVA calls its language_model
    embeddings = next(n for n, p in base.named_parameters() if p is base.get_input_embeddings().weight)
    for name, value in base.state_dict().items():
        state["model.language_model." + name] = _grow_rows(value, vocab) if name == embeddings else value
    for name, value in vlm.llm.model.get_output_embeddings().state_dict().items():
        state["lm_head." + name] = _grow_rows(value, vocab)
    return state


@torch.no_grad()
def save_hf_llava(vlm: VLM, path: str, chat_template: str | None = None) -> LlavaForConditionalGeneration:
    """Write a LLaVA-1.5-shaped ``VLM`` as a Hugging Face LLaVA folder that ``AutoProcessor.from_pretrained``
    and ``pipeline("image-text-to-text")`` load: weights and config, generation config, text tokenizer with
    ``<image>``, image processor and processor config, chat template. Two exports of one model are
    byte-identical.

    Args:
        vlm: HF CLIP encoder, all patches (optionally after the CLS token), no scaler, one shared 2-layer MLP
            projector, no LoRA, one dtype (written as is).
        path: the folder (created if missing).
        chat_template: Jinja for the processor and tokenizer; by default rendered from ``vlm.template``
            (a ``VicunaV1Template``; other templates need one given).

    If ``<image>`` is new to the text tokenizer, its embedding and LM-head rows are the mean of the existing
    rows: deterministic, and the ``<image>`` logit is then the mean of the other logits, so it cannot be the
    greedy choice (the input row is never read: HF LLaVA replaces ``<image>`` positions with visual features).
    """
    problems = export_problems(vlm, chat_template)
    if problems:
        raise ValueError("this composition has no Hugging Face LLaVA equivalent: " + "; ".join(problems))
    strategy = _feature_strategy(vlm)
    encoder, projector = vlm.encoder, vlm.projectors["shared"]
    tokenizer = copy.deepcopy(vlm.llm.text_tokenizer)  # the caller's tokenizer stays as it is
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_PLACEHOLDER]}, replace_extra_special_tokens=False)
    tokenizer.chat_template = chat_template if chat_template is not None else vicuna_v1_chat_template(vlm.template)
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    text_config = vlm.llm.model.config
    vocab = max(text_config.vocab_size, image_token_index + 1)
    dtype = next(vlm.parameters()).dtype
    config = LlavaConfig(
        vision_config=encoder.model.config.to_dict(),
        text_config={**text_config.to_dict(), "vocab_size": vocab, "dtype": _dtype_name(dtype)},
        image_token_index=image_token_index,
        image_seq_length=sum(vlm.visual_tokens_per_image().values()),
        vision_feature_layer=encoder.select_layer if isinstance(encoder.select_layer, int) else list(encoder.select_layer),
        vision_feature_select_strategy=strategy,
        projector_hidden_act=projector.activation,
        multimodal_projector_bias=projector.bias,
        tie_word_embeddings=text_config.tie_word_embeddings,
    )
    with torch.random.fork_rng(devices=[]), _default_dtype(dtype):  # the random init is overwritten below
        hf = LlavaForConditionalGeneration(config)
    hf.load_state_dict(_llava_state(vlm, vocab), strict=True)  # every tensor comes from the VLM
    hf.eval()
    hf.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(path)
    llava_processor(encoder, tokenizer, tokenizer.chat_template, strategy).save_pretrained(path)
    return hf
