"""The VLM system, a fixed pipeline: encode -> tokenize -> scale -> project -> fuse -> LLM.

Schemes that act elsewhere plug into typed extension points, each with a do-nothing default, so a new scheme is a
new file, never a new branch here:

- ``object_source`` (``masks.base.ObjectSource``): object masks before the tokenizers (online MaskInversion).
- ``text_fusion`` (``llm.base.TextFusion``): the text embeddings fused with the image before the LLM (LLaVA-Mini).
- ``attention`` (``llm.base.AttentionPolicy``): who attends to whom in the fused sequence (VoCo-LLaMA).
- ``decoding`` (``llm.base.DecodingPolicy``): how the LLM runs when generating (FastV, FitPrune, SparseVLM).
- ``budget_schedule`` (``tokenizers.base.BudgetSchedule``): the budgets a training step uses (M3, MQT).

Every part is built whole by its constructor (a part whose weights need a neighbour's width is given as a factory
and called with it), and says at build time what it needs from the others (``problems``); the model raises once
with all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from tokencompose.checkpoints import load_weights
from tokencompose.compose import compose_streams
from tokencompose.data.processing import ImageTransform
from tokencompose.data.transform import DataTransform
from tokencompose.encoders.base import VisionEncoder
from tokencompose.llm.base import (
    AttentionPolicy,
    CausalAttention,
    DecodingPolicy,
    NoTextFusion,
    PlainDecoding,
    TextFusion,
)
from tokencompose.llm.causal_lm import CausalLM, causal_lm_loss
from tokencompose.llm.conversation import IGNORE_INDEX, IMAGE_TOKEN_ID, ConversationEncoder
from tokencompose.llm.fusion import FusedInputs, fuse_visual_tokens
from tokencompose.llm.generation import greedy_generate
from tokencompose.llm.templates import ChatTemplate, VicunaV1Template
from tokencompose.masks.base import GivenObjects, ObjectSource
from tokencompose.model_configs import in_meta_build
from tokencompose.optimization import NonFiniteGuard, Optimization, warmup_cosine
from tokencompose.parts import Parts
from tokencompose.profiling import StageProfiler, stage
from tokencompose.projectors.base import MLPProjector, ProjectorFactory
from tokencompose.scalers.base import NoScaler, StreamScaler
from tokencompose.tokenizers.base import BudgetSchedule, FixedBudget, TokenizerFactory, VisualTokenizer
from tokencompose.types import EncoderRequest, ObjectMasks, ObjectRequirements, VisualSequence, VLMBatch

# What a recipe gives for a text fusion whose layers are built from the LLM (its class and options).
TextFusionFactory = Callable[[CausalLM], TextFusion]
# Where a checkpoint keeps the recipe (the YAML of its `model:` section) its model was built from.
RECIPE_KEY = "tokencompose_recipe"


def normalise_answer(text: str) -> str:
    return " ".join(text.lower().replace("</s>", " ").split())


def build(part: Any, neighbour: Any, kind: type) -> Any:
    """A part given built, or as a factory to call with the neighbour it needs (an encoder width, the LLM)."""
    return part if isinstance(part, kind) else part(neighbour)


class VLM(L.LightningModule):
    """A vision-language model composed from interchangeable parts.

    Args:
        encoder: the vision encoder.
        tokenizers: named visual tokenizers; their streams reach the LLM in this order, e.g.
            ``{"cls": GlobalTokenizer, "patch": PatchPoolTokenizer, "objects": ObjectTokenizer}``. A tokenizer
            whose weights need the encoder's width may be a factory, called with ``encoder.hidden_size``.
        llm: the causal LM adapter (owns the text tokenizer).
        object_source: where object masks come from (default: those that came with the batch).
        scaler: rescales streams before projection (default: none).
        projector: projector class with its options; widths come from the tokenizers and the LLM.
        shared_projector: one projector for all streams (their widths must agree) or one per stream.
        text_fusion: fuses the image into the text before the LLM (default: none), or a factory given the LLM.
        attention: the attention policy of the fused sequence (default: causal).
        decoding: how the LLM runs when generating (default: as it is).
        budget_schedule: which budgets a training step uses (default: the configured ones).
        template: chat template for conversations (default LLaVA's ``vicuna_v1``).
        max_length: longest sequence the LLM sees after visual tokens are expanded.
        max_new_tokens: generation length for validation and prediction.
        optimization: AdamW + warmup/cosine settings, per-part learning rates, the non-finite step limit.
        init_weights: a checkpoint whose matching tensors initialise this model (e.g. stage 1's projector
            for stage 2); unlike ``--ckpt_path`` it does not resume optimiser or step. Every tensor it skips
            (shape mismatch, unknown, missing) is logged; ``init_strict_shapes`` makes a shape mismatch an error.
            A meta build (``model_configs.meta_build``) has no weights to initialise and does not read it.
    """

    def __init__(
        self,
        *,
        encoder: VisionEncoder,
        tokenizers: dict[str, VisualTokenizer | TokenizerFactory],
        llm: CausalLM,
        object_source: ObjectSource | None = None,
        scaler: StreamScaler | None = None,
        projector: ProjectorFactory | None = None,
        shared_projector: bool = True,
        text_fusion: TextFusion | TextFusionFactory | None = None,
        attention: AttentionPolicy | None = None,
        decoding: DecodingPolicy | None = None,
        budget_schedule: BudgetSchedule | None = None,
        template: ChatTemplate | None = None,
        max_length: int = 2048,
        max_new_tokens: int = 16,
        optimization: Optimization | None = None,
        init_weights: str | None = None,
        init_strict_shapes: bool = False,
    ) -> None:
        super().__init__()
        if not tokenizers:
            raise ValueError("VLM: `tokenizers` is empty; give at least one visual tokenizer")
        self.encoder = encoder
        self.object_source = object_source if object_source is not None else GivenObjects()
        self.tokenizers = nn.ModuleDict(
            {name: build(tok, encoder.hidden_size, VisualTokenizer) for name, tok in tokenizers.items()})
        self.scaler = scaler if scaler is not None else NoScaler()
        self.llm = llm
        self.text_fusion = build(text_fusion, llm, TextFusion) if text_fusion is not None else NoTextFusion()
        self.attention = attention if attention is not None else CausalAttention()
        self.decoding = decoding if decoding is not None else PlainDecoding()
        self.budget_schedule = budget_schedule if budget_schedule is not None else FixedBudget()
        self.template = template if template is not None else VicunaV1Template()
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.optimization = optimization if optimization is not None else Optimization()
        self.shared_projector = shared_projector
        self.projectors = self._build_projectors(projector or MLPProjector, shared_projector)
        self.check_parts()
        self.val_accuracy, self.test_accuracy = MeanMetric(), MeanMetric()
        self._guard = NonFiniteGuard(self.optimization.max_nonfinite_steps)
        self.recipe: str | None = None  # set by the recipe parser (tokencompose.recipes); saved in checkpoints
        if init_weights is not None and not in_meta_build():
            load_weights(self, init_weights, strict_shapes=init_strict_shapes)

    # ------------------------------------------------------------------ build-time checks
    def parts(self) -> Parts:
        return Parts(self.encoder, self.tokenizers, self.llm, self.object_source, self.text_fusion, self.attention,
                     self.decoding, self.budget_schedule)

    def check_parts(self) -> None:
        """Ask every part what it needs from the others, check the model's own settings, and raise once with
        every problem, each under the recipe key of the part that has it."""
        parts = self.parts()
        named = [(f"model.tokenizers.{name}", tok) for name, tok in self.tokenizers.items()] + [
            ("model.encoder", self.encoder), ("model.object_source", self.object_source), ("model.scaler", self.scaler),
            ("model.text_fusion", self.text_fusion), ("model.attention", self.attention),
            ("model.decoding", self.decoding), ("model.budget_schedule", self.budget_schedule)]
        problems = [f"{key} ({type(part).__name__}): {problem}" for key, part in named
                    for problem in part.problems(parts)]
        if not problems:  # the budgets below are only meaningful when the parts fit together
            problems += self._settings_problems()
        if problems:
            raise ValueError("VLM: the parts do not fit:\n  - " + "\n  - ".join(problems))

    def _settings_problems(self) -> list[str]:
        problems = []
        unknown = sorted(set(self.optimization.learning_rates or {}) - set(self.part_names()))
        if unknown:
            problems.append(f"model.optimization.learning_rates: unknown part(s) {unknown}; allowed: {self.part_names()}")
        for training in (True, False):
            budget = self.visual_tokens_per_image(training=training)
            if self.max_length <= sum(budget.values()):
                problems.append(
                    f"model.max_length={self.max_length} leaves no room for text: one image alone takes "
                    f"{sum(budget.values())} visual tokens ({budget}, {'training' if training else 'test'} budget); "
                    "raise it or lower the budget"
                )
                break
        if self.max_new_tokens < 1:
            problems.append(f"model.max_new_tokens={self.max_new_tokens}; must be >= 1")
        if self.optimization.max_nonfinite_steps < 1:
            problems.append(f"model.optimization.max_nonfinite_steps={self.optimization.max_nonfinite_steps}; must be >= 1")
        return problems

    # ------------------------------------------------------------------ composition
    def fsdp_unit_classes(self) -> frozenset[type[nn.Module]]:
        """What ``strategies.fsdp(wrap="auto")`` shards (and checkpoints) as one unit each: the LLM's decoder
        layer class (LLaVA-Mini's pre-fusion layers are of that class too). The rest is the root unit."""
        return self.llm.decoder_layer_classes()

    def part_names(self) -> list[str]:
        """The model's parts (its child modules with parameters): the keys of ``optimization.learning_rates``."""
        return [name for name, module in self.named_children() if any(True for _ in module.parameters())]

    def stream_widths(self) -> dict[str, int]:
        return {name: tok.output_width(self.encoder) for name, tok in self.tokenizers.items()}

    def _build_projectors(self, projector: ProjectorFactory, shared: bool) -> nn.ModuleDict:
        widths = self.stream_widths()
        if shared:
            if len(set(widths.values())) > 1:
                raise ValueError(
                    f"shared_projector=true needs one input width, but the streams have {widths}; set "
                    "`shared_projector: false` (one projector per stream) or choose tokenizers of equal width"
                )
            return nn.ModuleDict({"shared": projector(next(iter(widths.values())), self.llm.hidden_size)})
        return nn.ModuleDict({name: projector(width, self.llm.hidden_size) for name, width in widths.items()})

    def visual_tokens_per_image(self, training: bool = False) -> dict[str, int]:
        """Token slots per image that reach the LLM, per stream, before any image is seen: the test-time budget
        (validate, predict, eval, sweep) or with ``training`` the most a training step uses — whatever mode
        the module is in now."""
        context = self.text_fusion.context_streams()
        return {name: tok.num_tokens(self.encoder, training=training)
                for name, tok in self.tokenizers.items() if name not in context}

    def llm_positions(self, visual: VisualSequence) -> Tensor:
        """(N,) bool: which visual positions reach the LLM (all but the text fusion's own streams)."""
        context = [visual.kinds.index(name) for name in self.text_fusion.context_streams()]
        return ~torch.isin(visual.kind, torch.tensor(context, dtype=visual.kind.dtype, device=visual.kind.device))

    def encoder_request(self) -> EncoderRequest:
        """What the tokenizers ask the encoder for on each call, merged (layers unioned: nothing overwritten)."""
        return EncoderRequest.merge(tok.encoder_request() for tok in self.tokenizers.values())

    @property
    def needs_autograd(self) -> bool:
        """Whether prediction needs autograd (an online object source runs MaskInversion)."""
        return self.object_source.needs_autograd

    def conversation_encoder(self, training: bool = False) -> ConversationEncoder:
        """Conversations -> ids and labels for this model; the length guard counts the visual tokens of the
        test-time budget, or of the training budget with ``training``."""
        return ConversationEncoder(
            text_tokenizer=self.llm.text_tokenizer,
            template=self.template,
            max_length=self.max_length,
            visual_tokens_per_image=sum(self.visual_tokens_per_image(training=training).values()),
        )

    def data_transform(self) -> DataTransform:
        """Everything the data pipeline needs from this model, once (see ``DataTransform``)."""
        encoder = self.encoder
        needs = ObjectRequirements.merge(tok.object_requirements(encoder) for tok in self.tokenizers.values())
        return DataTransform(
            image=ImageTransform(encoder.image_size, encoder.image_mean, encoder.image_std),
            train_text=self.conversation_encoder(training=True),
            eval_text=self.conversation_encoder(training=False),
            objects=self.object_source.data_requirements(needs),
            pad_token_id=self.llm.text_tokenizer.pad_token_id,
        )

    def encode_images(
        self, pixels: Tensor, objects: ObjectMasks | None = None, profiler: StageProfiler | None = None
    ) -> VisualSequence:
        """(I, 3, S, S) (+ masks) -> VisualSequence(tokens (I, N, D_llm), valid (I, N), kind (N,))."""
        if pixels.shape[0] == 0:  # a batch of text-only samples: no image to encode
            sizes = [tok.num_tokens(self.encoder, training=self.training) for tok in self.tokenizers.values()]
            kind = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)]).to(pixels.device)
            return VisualSequence(pixels.new_zeros(0, len(kind), self.llm.hidden_size),
                                  torch.zeros(0, len(kind), dtype=torch.bool, device=pixels.device), kind, tuple(self.tokenizers))
        with stage(profiler, "mask_front_end"):
            objects = self.object_source(self.encoder, pixels, objects)
        with stage(profiler, "encoder"):
            features = self.encoder(pixels, self.encoder_request())
        with stage(profiler, "reduction"):
            streams = {name: tok(features, objects) for name, tok in self.tokenizers.items()}
            streams = self.scaler(streams)
        with stage(profiler, "projector"):
            return compose_streams(streams, self.projectors, self.shared_projector, self.tokenizers)

    def blank_images(self, count: int, size: int, device: torch.device) -> VisualSequence:
        """``count`` all-zero images (normalised pixels), encoded: what text fusion pairs text-only samples with."""
        pixels = torch.zeros(count, 3, size, size, device=device)
        return self.encode_images(pixels, ObjectMasks.empty(count, size, size, device=device))

    def fuse(self, batch: VLMBatch, for_generation: bool = False, profiler: StageProfiler | None = None,
             visual: VisualSequence | None = None) -> FusedInputs:
        """Text embeddings with each image placeholder replaced by that image's visual tokens.

        ``visual``: the batch's images already encoded (``encode_images``), to reuse one encoding for the
        training-format and the generation-format text of the same batch.
        """
        input_ids = batch.prompt_ids if for_generation else batch.input_ids
        mask = batch.prompt_mask if for_generation else batch.attention_mask
        labels = None if for_generation else batch.labels
        if visual is None:
            visual = self.encode_images(batch.pixels, batch.objects, profiler)  # (I, N, D): placeholder order
        to_llm = self.llm_positions(visual)
        instruction = mask.bool() & (input_ids >= 0)  # what fusion may read: never an answer
        if labels is not None:
            instruction &= labels == IGNORE_INDEX
        with stage(profiler, "reduction"):
            text, tokens = self.text_fusion(
                self.llm.embed(input_ids), instruction, visual, to_llm, batch.image_counts(),
                lambda count: self.blank_images(count, batch.pixels.shape[-1], batch.pixels.device))
        fused = fuse_visual_tokens(
            input_ids, text, mask, tokens, visual.valid[:, to_llm], IMAGE_TOKEN_ID, labels=labels,
            left_pad=for_generation, visual_kind=visual.kind[to_llm],
        )
        return self.attention(fused, visual.kinds)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints describe themselves: the recipe of the model, rebuilt by ``tokencompose.load(path)``."""
        if self.recipe is not None:
            checkpoint[RECIPE_KEY] = self.recipe

    # ------------------------------------------------------------------ steps
    def forward(self, batch: VLMBatch, visual: VisualSequence | None = None) -> tuple[Tensor, Tensor]:
        """VLMBatch (+ its images already encoded) -> (logits (B, L, V), loss)."""
        fused = self.fuse(batch, visual=visual)
        logits = self.llm(fused.inputs_embeds, fused.attention(), fused.position_ids).logits
        return logits, causal_lm_loss(logits, fused.labels)

    def training_step(self, batch: VLMBatch, batch_idx: int) -> Tensor:
        loss = self.budget_schedule.training_loss(lambda: self(batch)[1], self.tokenizers)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        if self.skipped_steps:
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=len(batch))
        return loss

    @property
    def skipped_steps(self) -> int:
        """Optimizer steps skipped for a non-finite loss or gradient."""
        return self._guard.skipped

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Never step on a non-finite loss or gradient (``NonFiniteGuard``; ranks agree)."""
        reduce = (lambda flag: self.trainer.strategy.reduce(flag, reduce_op="sum")) if self._trainer else (lambda f: f)
        self._guard.check(optimizer, reduce, self.global_step)

    def validation_step(self, batch: VLMBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val", self.val_accuracy)

    def test_step(self, batch: VLMBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test", self.test_accuracy)

    def _evaluation_step(self, batch: VLMBatch, split: str, accuracy: MeanMetric) -> None:
        """Loss and exact-match answer accuracy (greedy) of a batch, logged as ``<split>/loss`` and ``/accuracy``."""
        visual = self.encode_images(batch.pixels, batch.objects)  # once, for the loss and for generation
        _, loss = self(batch, visual)
        predictions = self.generate(batch, visual=visual)
        correct = torch.tensor(
            [normalise_answer(p) == normalise_answer(a) for p, a in zip(predictions, batch.answers, strict=True)],
            dtype=torch.float,
        )
        accuracy.update(correct)
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log(f"{split}/accuracy", accuracy, prog_bar=True, batch_size=len(batch))

    def predict_step(self, batch: VLMBatch, batch_idx: int) -> list[dict[str, Any]]:
        start = time.perf_counter()
        prompt = self.fuse(batch, for_generation=True)
        visual_counts = ((prompt.visual_kind >= 0) & prompt.attention_mask.bool()).sum(1)  # (B,) tokens the LLM sees
        predictions = self.answer(prompt)
        seconds = (time.perf_counter() - start) / len(batch)
        questions = batch.questions if batch.questions is not None else [""] * len(batch)
        return [
            {"key": key, "question": question, "question_type": qtype, "prediction": prediction, "answer": answer,
             "visual_tokens": int(n), "seconds": seconds}
            for key, question, qtype, prediction, answer, n in zip(
                batch.keys, questions, batch.question_types, predictions, batch.answers, visual_counts.tolist(), strict=True
            )
        ]

    @torch.no_grad()
    def generate(
        self,
        batch: VLMBatch,
        max_new_tokens: int | None = None,
        use_cache: bool = True,
        profiler: StageProfiler | None = None,
        visual: VisualSequence | None = None,
    ) -> list[str]:
        """Greedy answers to the batch's prompts (left-padded, so results do not depend on the batch)."""
        prompt = self.fuse(batch, for_generation=True, profiler=profiler, visual=visual)
        return self.answer(prompt, max_new_tokens, use_cache, profiler)

    @torch.no_grad()
    def answer(self, prompt: FusedInputs, max_new_tokens: int | None = None, use_cache: bool = True,
               profiler: StageProfiler | None = None) -> list[str]:
        """Greedy answers to an already fused, left-padded prompt, stripped once here (as LLaVA's model_vqa*.py
        do) and never again by a scorer: MME's official rule reads the answer as given."""
        stepper = self.decoding.stepper(self.llm, prompt, use_cache)
        ids = greedy_generate(self.llm, prompt, max_new_tokens or self.max_new_tokens, use_cache, profiler, stepper)
        return [text.strip() for text in self.llm.text_tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ optimisation
    def parameter_groups(self) -> list[dict[str, Any]]:
        """One AdamW group per part with trainable parameters; together exactly the parameters that require grad."""
        opt, seen, groups = self.optimization, set(), []
        for part, module in self.named_children():
            params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                groups.append({"params": params, "lr": (opt.learning_rates or {}).get(part, opt.lr), "name": part})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optimization
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError("the learning-rate schedule needs a known length: set `trainer.max_steps`")
        schedule = LambdaLR(
            optimizer, lambda step: warmup_cosine(step, int(total), opt.warmup_ratio, opt.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
