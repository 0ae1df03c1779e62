"""The training cost model behind ``tokencompose plan``: FLOPs, memory per GPU and time, as pure functions of
numbers (no torch, no model): parts described by ``PartCost``, the run by ``RunSetup``.

FLOPs follow the usual accounting (Kaplan et al. 2020; PaLM's MFU, Chowdhery et al. 2022, App. B): a matmul with
``n`` weights costs ``2 n`` per token forward; attention adds ``4 L s^2 d`` per sequence forward (Q K^T and the
weighted sum of V, counted in full as PaLM does); the backward pass costs one forward for the input gradients
(where a trainable part lies before it) plus one forward times the trainable fraction for the weight gradients.
Activation checkpointing recomputes the forward of the checkpointed layers: hardware FLOPs, not model FLOPs, so
MFU is stated over model FLOPs.

Memory per GPU is an upper bound by construction: weights, gradients and AdamW's two states in the parameters'
own dtypes, sharded as the strategy shards them, plus every activation saved for backward, all live at once
(in a real step the gradients grow while the activations are freed). ``decoder_layer_activation_elements`` counts what a
LLaMA decoder layer saves per token; the measured peaks it is checked against are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

GiB = 1024**3
Strategy = Literal["single", "ddp", "fsdp"]
Sharding = Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"]


@dataclass(frozen=True)
class PartCost:
    """One part of the model, per sample.

    Args:
        name: the part (``encoder``, ``llm``, ``mask_front_end``, ...).
        parameters / trainable: its parameter counts.
        bytes_per_parameter: its parameters' dtype size (gradients and AdamW states take the same).
        forward_flops: forward FLOPs per sample.
        backward_inputs: whether the backward pass computes this part's input gradients (a trainable part lies
            before it in the pipeline).
        activation_bytes: bytes saved for backward per sample without activation checkpointing.
        checkpointed_activation_bytes: the same with it (the layer inputs + one layer recomputed at a time).
        checkpointed_flops: forward FLOPs per sample that checkpointing recomputes.
        in_step: whether it runs in the training step (the offline annotate front end does not).
    """

    name: str
    parameters: int
    trainable: int
    bytes_per_parameter: float
    forward_flops: float
    backward_inputs: bool = True
    activation_bytes: float = 0.0
    checkpointed_activation_bytes: float = 0.0
    checkpointed_flops: float = 0.0
    in_step: bool = True

    def backward_flops(self) -> float:
        if self.parameters == 0 and not self.backward_inputs:
            return 0.0
        weights = self.forward_flops * (self.trainable / self.parameters if self.parameters else 0.0)
        return (self.forward_flops if self.backward_inputs else 0.0) + weights


@dataclass(frozen=True)
class RunSetup:
    """The run: devices x nodes, strategy, per-device batch, the GPU and the MFU assumed for time."""

    devices: int = 1
    nodes: int = 1
    strategy: Strategy = "single"
    sharding: Sharding = "FULL_SHARD"
    batch_size: int = 1
    accumulate: int = 1
    activation_checkpointing: bool = False
    largest_unit_bytes: float = 0.0  # an FSDP unit's full parameters (gathered for its forward and backward)
    gpu_memory_gib: float = 80.0
    reserved_gib: float = 1.0  # CUDA context, allocator fragmentation, communication buffers
    peak_tflops: float = 312.0  # A100 bf16 dense
    mfu: float = 0.4
    samples_per_epoch: int = 0

    @property
    def world(self) -> int:
        return self.devices * self.nodes


def linear_flops(weights: int, tokens: float) -> float:
    """Forward FLOPs of matmuls holding ``weights`` weights applied to ``tokens`` tokens (multiply + add)."""
    return 2.0 * weights * tokens


def attention_flops(layers: int, tokens: float, width: int) -> float:
    """Forward FLOPs of attention scores and weighted values over one sequence: 2 matmuls of s x s x d per layer."""
    return 4.0 * layers * tokens * tokens * width


def decoder_layer_activation_elements(tokens: float, width: int, kv_width: int, ffn: int, heads: int,
                                      stores_scores: bool, frozen: bool = False) -> float:
    """Elements a LLaMA decoder layer (HF ``LlamaDecoderLayer``) saves for backward over ``tokens`` tokens.

    Trainable: two RMSNorms (input, its square's input, the normalised value: 3 d each), q/k/v's shared input
    and RoPE's q, k (d + kv), SDPA's q, k, v and output (2 d + 2 kv), o_proj's input (d), the MLP's
    gate/up/SiLU/product (4 ffn). Frozen (gradients only pass through, LLaVA stage 1): no linear layer keeps its
    input, nor a norm its normalised value, nor RoPE its q, k: 2 x 2 d + SDPA's 2 d + 2 kv + 3 ffn. With eager
    attention the softmax weights too (heads x tokens per token)."""
    per_token = 6 * width + 2 * kv_width + 3 * ffn if frozen else 10 * width + 3 * kv_width + 4 * ffn
    return tokens * (per_token + (heads * tokens if stores_scores else 0))


def lm_head_activation_elements(tokens: float, vocab: int) -> float:
    """The logits and the loss over them: logits, the float copy the loss takes, log-softmax's output and, in
    backward, two vocabulary-wide gradients at once: 4 x V per token (as elements of 4 bytes where float)."""
    return 4.0 * tokens * vocab


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU at the peak of a step."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    reserved: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.reserved


def state_shards(setup: RunSetup) -> tuple[int, int]:
    """How many ways (weights, gradients + optimizer states) are split across GPUs."""
    if setup.strategy != "fsdp" or setup.sharding == "NO_SHARD":
        return 1, 1
    if setup.sharding == "HYBRID_SHARD":
        return setup.devices, setup.devices  # sharded within a node, replicated across nodes
    if setup.sharding == "SHARD_GRAD_OP":
        return 1, setup.world  # parameters stay gathered between forward and backward
    return setup.world, setup.world


def activation_bytes_per_sample(parts: list[PartCost], checkpointing: bool) -> float:
    return sum(p.checkpointed_activation_bytes if checkpointing else p.activation_bytes for p in parts if p.in_step)


def memory_per_gpu(parts: list[PartCost], setup: RunSetup, batch_size: int | None = None) -> Memory:
    """Weights, gradients and AdamW states (2 per trainable parameter) as sharded by the strategy, activations
    for ``batch_size`` samples (default the setup's), the reserve. DDP holds a second copy of the gradients in
    its buckets; FSDP gathers the largest unit twice (the one running and the one prefetched)."""
    batch = setup.batch_size if batch_size is None else batch_size
    step = [p for p in parts if p.in_step]
    weight_shards, state_split = state_shards(setup)
    weights = sum(p.parameters * p.bytes_per_parameter for p in step) / weight_shards
    if setup.strategy == "fsdp" and weight_shards > 1:
        weights += 2 * setup.largest_unit_bytes
    gradient_bytes = sum(p.trainable * p.bytes_per_parameter for p in step)
    gradients = gradient_bytes / state_split * (2 if setup.strategy == "ddp" else 1)
    optimizer = 2 * gradient_bytes / state_split
    activations = batch * activation_bytes_per_sample(step, setup.activation_checkpointing)
    return Memory(weights, gradients, optimizer, activations, setup.reserved_gib * GiB)


def largest_batch(parts: list[PartCost], setup: RunSetup) -> int:
    """The largest per-device batch whose peak fits ``setup.gpu_memory_gib`` (0: not even one sample)."""
    fixed = memory_per_gpu(parts, setup, batch_size=0).total
    per_sample = activation_bytes_per_sample(parts, setup.activation_checkpointing)
    room = setup.gpu_memory_gib * GiB - fixed
    if room < per_sample:
        return 0
    return math.floor(room / per_sample) if per_sample > 0 else 1 << 30


@dataclass(frozen=True)
class FlopsPerSample:
    """Per part: forward, backward and recomputed FLOPs of one sample."""

    forward: dict[str, float] = field(default_factory=dict)
    backward: dict[str, float] = field(default_factory=dict)
    recomputed: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> float:
        """Forward + backward of the parts in the step (what MFU counts)."""
        return sum(self.forward.values()) + sum(self.backward.values())


def flops_per_sample(parts: list[PartCost], checkpointing: bool) -> FlopsPerSample:
    """FLOPs per sample of the parts in the training step (the offline front end is costed on its own)."""
    step = [p for p in parts if p.in_step]
    return FlopsPerSample(
        forward={p.name: p.forward_flops for p in step},
        backward={p.name: p.backward_flops() for p in step},
        recomputed={p.name: (p.checkpointed_flops if checkpointing else 0.0) for p in step},
    )


def step_seconds(model_flops_per_sample: float, setup: RunSetup) -> float:
    """One optimizer step (``accumulate`` micro-batches of ``batch_size`` per device) at ``setup.mfu``."""
    per_device = model_flops_per_sample * setup.batch_size * setup.accumulate
    return per_device / (setup.peak_tflops * 1e12 * setup.mfu)


def gpu_hours_per_epoch(model_flops_per_sample: float, setup: RunSetup) -> float:
    """GPU-hours for ``setup.samples_per_epoch`` samples at ``setup.mfu`` (independent of the GPU count)."""
    return model_flops_per_sample * setup.samples_per_epoch / (setup.peak_tflops * 1e12 * setup.mfu) / 3600
