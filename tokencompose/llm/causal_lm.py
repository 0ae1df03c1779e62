"""Adapter over any ``transformers`` causal LM: embeddings in, logits/loss out, optional LoRA through peft."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tokencompose.hub import from_pretrained
from tokencompose.llm.conversation import IGNORE_INDEX
from tokencompose.model_configs import in_meta_build, published_config


@dataclass
class LoraSettings:
    """LoRA through peft: rank, scale, dropout and the module names to adapt (LLaMA's attention + MLP)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross entropy, mean over target positions: (B, L, V), (B, L) -> scalar."""
    shifted = labels[:, 1:]
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=IGNORE_INDEX, reduction="mean"
    )


class CausalLM(L.LightningModule):
    """A Hugging Face causal LM driven through ``inputs_embeds``.

    Args:
        text_tokenizer: the LLM's text tokenizer (recipes build it with ``load_text_tokenizer``).
        name_or_path: hub name or local ``save_pretrained`` directory (real weights); inside
            ``model_configs.meta_build()`` the shipped configuration of that name, in ``dtype``, on the meta device.
        config: a model config as a dict with ``model_type`` (random weights); ``vocab_size`` defaults to the
            text tokenizer's length. Exclusive with ``name_or_path``.
        freeze: keep the LLM's own weights fixed (LLaVA stage 1); LoRA adapters still train.
        lora: add LoRA adapters (peft); the base weights are then frozen.
        gradient_checkpointing: trade compute for activation memory.
        dtype: weight dtype for real checkpoints, e.g. ``bfloat16``.
        attn_implementation: ``sdpa`` (default), ``eager`` (FastV reads attention weights), ...
        trust_remote_code: only when you trust the checkpoint's code.
    """

    def __init__(
        self,
        *,
        text_tokenizer: PreTrainedTokenizerBase,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        freeze: bool = False,
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if (name_or_path is None) == (config is None):
            raise ValueError("CausalLM: give exactly one of `name_or_path` (real weights) or `config` (random)")
        self.text_tokenizer = text_tokenizer
        published = name_or_path is not None and in_meta_build()  # the architecture only, no weights
        if name_or_path is not None and not published:
            model = from_pretrained(
                "CausalLM", name_or_path, AutoModelForCausalLM.from_pretrained, dtype=getattr(torch, dtype) if dtype else None,
                trust_remote_code=trust_remote_code, attn_implementation=attn_implementation,
            )
        else:
            config = dict(published_config(name_or_path) if published else config)
            if "model_type" not in config:
                raise ValueError("CausalLM: `config` needs a `model_type` (e.g. 'llama')")
            config.setdefault("vocab_size", len(text_tokenizer))
            config.setdefault("pad_token_id", text_tokenizer.pad_token_id)
            config.setdefault("bos_token_id", text_tokenizer.bos_token_id)
            config.setdefault("eos_token_id", text_tokenizer.eos_token_id)
            if attn_implementation is not None:
                config["attn_implementation"] = attn_implementation
            weight_dtype = getattr(torch, dtype) if dtype and published else None  # as from_pretrained would
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=weight_dtype)
        vocab = model.get_input_embeddings().num_embeddings
        if len(text_tokenizer) > vocab:
            raise ValueError(
                f"CausalLM: the text tokenizer has {len(text_tokenizer)} tokens but the LLM's embedding has {vocab} "
                "rows; they do not belong together"
            )
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.freeze = freeze
        if freeze:
            model.requires_grad_(False)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model,
                LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules),
            )
        self.model: PreTrainedModel = model

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def decoder_layers(self) -> nn.ModuleList:
        """The transformer's decoder layers (under a LoRA wrapper, if any): LLaMA-style models keep them in
        ``get_decoder().layers``; another layout is an error naming what to do."""
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        decoder = model.get_decoder()
        layers = getattr(decoder, "layers", None)
        if not isinstance(layers, nn.ModuleList) or not len(layers):
            raise ValueError(
                f"CausalLM: {type(decoder).__name__} keeps no decoder layers in `layers`; name the FSDP units "
                "explicitly (trainer.strategy.init_args.wrap: [package.module.DecoderLayer])"
            )
        return layers

    def decoder_layer_classes(self) -> frozenset[type[nn.Module]]:
        """The classes of the decoder layers built (the FSDP units of a sharded run)."""
        return frozenset(type(layer) for layer in self.decoder_layers())

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, T) long -> (B, T, D). Negative ids (image placeholders) embed as the pad row; fusion overwrites them."""
        return self.model.get_input_embeddings()(input_ids.clamp(min=0))

    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> Any:
        """inputs_embeds (B, L, D), attention_mask (B, L_total), position_ids (B, L) -> HF output (logits (B, L, V))."""
        return self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
