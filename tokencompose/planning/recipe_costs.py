"""A built ``VLM`` (on the meta device or real) -> the ``PartCost`` of each part, for ``cost_model``.

What is read from the model, not repeated: parameter counts and dtypes per part, what trains, the encoder's
grid, the visual tokens each stream sends, the LLM's and the pre-fusion layers' shapes (their HF config) and
attention implementation. Tokens through each part per sample (one image):

- encoder: grid^2 + 1 (CLS), frozen encoders save nothing (no part before them trains);
- tokenizers, projectors: the visual tokens the streams send in training (``visual_tokens_per_image``), except a
  text fusion's context stream, which is all grid^2 patches;
- text fusion (LLaVA-Mini's pre-fusion): its context patches + the text tokens;
- LLM: the sequence length (visual + text tokens).

Parts other than decoder-layer stacks cost ``2 x matmul weights`` per token and save the inputs and outputs of
their linear layers (an upper bound on what their backward keeps).
"""

from __future__ import annotations

from torch import nn

from tokencompose.planning.cost_model import (
    PartCost,
    attention_flops,
    decoder_layer_activation_elements,
    linear_flops,
    lm_head_activation_elements,
)


def matmul_weights(module: nn.Module) -> int:
    """Weights of the linear and convolution layers under ``module`` (embedding tables and norms cost no FLOPs
    worth counting). A patch convolution is applied once per patch, as a linear layer per token."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def linear_io_elements(module: nn.Module) -> int:
    """Per token: inputs + outputs of every linear layer (what a trainable MLP keeps for its backward, at most)."""
    return sum(m.in_features + m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def counts(module: nn.Module) -> tuple[int, int, float]:
    """(parameters, trainable, bytes per parameter) of ``module``."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in params)
    return total, trainable, (size / total if total else 0.0)


def _decoder_shapes(config) -> tuple[int, int, int, int]:
    """(width, kv width, ffn, heads) of a LLaMA-style HF config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    width = config.hidden_size
    return width, width // heads * kv_heads, config.intermediate_size, heads


def decoder_stack_cost(name: str, module: nn.Module, layers: nn.ModuleList, config, tokens: float,
                       backward_inputs: bool, with_head: bool) -> PartCost:
    """A stack of LLaMA decoder layers (the LLM, with its head and loss, or LLaVA-Mini's pre-fusion)."""
    total, trainable, size = counts(module)
    width, kv, ffn, heads = _decoder_shapes(config)
    eager = getattr(config, "_attn_implementation", "sdpa") == "eager"
    head_weights = matmul_weights(module) - matmul_weights(layers)
    forward = linear_flops(matmul_weights(module), tokens) + attention_flops(len(layers), tokens, width)
    layer = decoder_layer_activation_elements(tokens, width, kv, ffn, heads, stores_scores=eager, frozen=trainable == 0)
    rest = 5 * tokens * width  # embeddings, the fused input, the final norm (3)
    head = lm_head_activation_elements(tokens, config.vocab_size) * 4 if with_head else 0.0  # float32
    full = (len(layers) * layer + rest) * size + head
    checkpointed = (len(layers) * tokens * width + layer + rest) * size + head
    recomputed = forward - (linear_flops(head_weights, tokens) if with_head else 0.0)
    return PartCost(name, total, trainable, size, forward, backward_inputs, full, checkpointed, recomputed)


def generic_cost(name: str, module: nn.Module, tokens: float, backward_inputs: bool) -> PartCost:
    total, trainable, size = counts(module)
    saves = trainable > 0 or backward_inputs
    activations = linear_io_elements(module) * tokens * size if saves else 0.0
    return PartCost(name, total, trainable, size, linear_flops(matmul_weights(module), tokens), backward_inputs,
                    activations, activations)


def encoder_cost(module: nn.Module, tokens: int) -> PartCost:
    """A ViT encoder: its matmuls and attention over ``tokens`` per image (all its blocks run)."""
    cost = generic_cost("encoder", module, tokens, backward_inputs=False)
    config = getattr(getattr(module, "model", None), "config", None)
    layers, width = getattr(config, "num_hidden_layers", 0), getattr(config, "hidden_size", 0)
    forward = cost.forward_flops + attention_flops(layers, tokens, width)
    return PartCost("encoder", cost.parameters, cost.trainable, cost.bytes_per_parameter, forward, False,
                    cost.activation_bytes, cost.checkpointed_activation_bytes)


def vlm_part_costs(model, sequence_length: int) -> list[PartCost]:
    """The parts of ``model`` in pipeline order, per training sample of ``sequence_length`` LLM tokens."""
    encoder = model.encoder
    patches = encoder.grid_size**2
    visual = model.visual_tokens_per_image(training=True)
    text_tokens = max(sequence_length - sum(visual.values()), 0)
    context = model.text_fusion.context_streams()
    stream_tokens = sum(visual.values()) + patches * len(context)
    parts = [encoder_cost(encoder, patches + 1)]
    trains_before = parts[0].trainable > 0
    if any(True for _ in model.object_source.parameters()):
        parts.append(generic_cost("mask_front_end", model.object_source, patches, trains_before))
        trains_before |= parts[-1].trainable > 0
    for name, module in (("tokenizers", model.tokenizers), ("projectors", model.projectors)):
        if any(True for _ in module.parameters()):
            parts.append(generic_cost(name, module, stream_tokens, trains_before))
            trains_before |= parts[-1].trainable > 0
    hf = model.llm.model
    config = hf.get_base_model().config if hasattr(hf, "get_base_model") else hf.config
    fusion_layers = getattr(model.text_fusion, "layers", None)
    if isinstance(fusion_layers, nn.ModuleList) and len(fusion_layers):
        tokens = patches * len(context) + text_tokens
        parts.append(decoder_stack_cost("text_fusion", model.text_fusion, fusion_layers, config, tokens,
                                        trains_before, with_head=False))
        trains_before |= parts[-1].trainable > 0
    parts.append(decoder_stack_cost("llm", model.llm, model.llm.decoder_layers(), config, sequence_length,
                                    trains_before, with_head=True))
    return parts


def largest_unit_bytes(model) -> float:
    """The full size of the largest FSDP unit (a decoder layer): what one GPU gathers to run it."""
    return max(sum(p.numel() * p.element_size() for p in layer.parameters()) for layer in model.llm.decoder_layers())
