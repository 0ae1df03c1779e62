"""The VLM system: encoder -> visual tokenizers -> scaler -> projectors -> fusion -> causal LM."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from tokencompose.checkpoints import load_weights
from tokencompose.compose import compose_streams
from tokencompose.encoders.base import VisionEncoder
from tokencompose.llm.causal_lm import CausalLM, causal_lm_loss
from tokencompose.llm.conversation import IGNORE_INDEX, IMAGE_TOKEN_ID, ConversationEncoder
from tokencompose.llm.fastv import FastV
from tokencompose.llm.fusion import FusedInputs, fuse_visual_tokens
from tokencompose.llm.generation import greedy_generate
from tokencompose.llm.prefusion import ModalityPreFusion
from tokencompose.llm.templates import ChatTemplate, VicunaV1Template
from tokencompose.masks.annotator import ObjectAnnotator
from tokencompose.optimization import Optimization, warmup_cosine
from tokencompose.profiling import StageProfiler, stage
from tokencompose.projectors.base import MLPProjector, ProjectorFactory
from tokencompose.scalers.base import NoScaler, StreamScaler
from tokencompose.tokenizers.base import VisualTokenizer
from tokencompose.types import ObjectMasks, VisualSequence, VLMBatch

log = logging.getLogger(__name__)


def normalise_answer(text: str) -> str:
    return " ".join(text.lower().replace("</s>", " ").split())


class VLM(L.LightningModule):
    """A vision-language model composed from interchangeable parts.

    Args:
        encoder: the vision encoder.
        tokenizers: named visual tokenizers; their streams reach the LLM in this order, e.g.
            ``{"cls": GlobalTokenizer, "patch": PatchPoolTokenizer, "objects": ObjectTokenizer}``.
        llm: the causal LM adapter (owns the text tokenizer).
        scaler: rescales streams before projection (default: none).
        projector: projector class with its options; widths come from the tokenizers and the LLM.
        shared_projector: one projector for all streams (their widths must agree) or one per stream.
        template: chat template for conversations (default LLaVA's ``vicuna_v1``).
        max_length: longest sequence the LLM sees after visual tokens are expanded.
        max_new_tokens: generation length for validation and prediction.
        optimization: AdamW + warmup/cosine settings, per-part learning rates.
        init_weights: a checkpoint whose matching tensors initialise this model (e.g. stage 1's projector
            for stage 2); unlike ``--ckpt_path`` it does not resume optimiser or step. Every tensor it skips
            (shape mismatch, unknown, missing) is logged; ``init_strict_shapes`` makes a shape mismatch an error.
        object_annotator: compute object masks and MaskInversion embeddings online (new images, or the tiny
            end-to-end recipes); training on stored annotations from ``tokencompose annotate`` needs none.
        prefusion: LLaVA-Mini's modality pre-fusion; its ``context`` stream is seen by pre-fusion only.
        summary_stream: VoCo-LLaMA — text after this stream's tokens cannot attend to anything before them
            (system prompt and image), so the image reaches the answer only through them.
        llm_pruner: FastV — drop low-attention visual tokens inside the LLM when generating (training-free).
    """

    def __init__(
        self,
        *,
        encoder: VisionEncoder,
        tokenizers: dict[str, VisualTokenizer],
        llm: CausalLM,
        scaler: StreamScaler | None = None,
        projector: ProjectorFactory | None = None,
        shared_projector: bool = True,
        template: ChatTemplate | None = None,
        max_length: int = 2048,
        max_new_tokens: int = 16,
        optimization: Optimization | None = None,
        init_weights: str | None = None,
        init_strict_shapes: bool = False,
        object_annotator: ObjectAnnotator | None = None,
        prefusion: ModalityPreFusion | None = None,
        summary_stream: str | None = None,
        llm_pruner: FastV | None = None,
    ) -> None:
        super().__init__()
        if not tokenizers:
            raise ValueError("VLM: `tokenizers` is empty; give at least one visual tokenizer")
        self.encoder = encoder
        self.object_annotator = object_annotator
        self.tokenizers = nn.ModuleDict(tokenizers)
        for tokenizer in self.tokenizers.values():
            tokenizer.attach(encoder)
        self.scaler = scaler if scaler is not None else NoScaler()
        self.scaler.check_streams(self.tokenizers.keys())
        self.llm = llm
        self.prefusion = prefusion
        if summary_stream is not None and summary_stream not in self.tokenizers:
            raise ValueError(f"summary_stream={summary_stream!r} is not a stream; streams: {list(self.tokenizers)}")
        self.summary_stream = summary_stream
        self.llm_pruner = llm_pruner
        if prefusion is not None:
            if prefusion.context not in self.tokenizers:
                raise ValueError(f"prefusion.context={prefusion.context!r} is not a stream; streams: {list(self.tokenizers)}")
            prefusion.attach(llm)
        varying = [name for name, tok in self.tokenizers.items() if tok.budget_variants()]
        if len(varying) > 1:
            raise ValueError(f"only one tokenizer may average the loss over budgets; {varying} all do")
        self.shared_projector = shared_projector
        self.projectors = self._build_projectors(projector or MLPProjector, shared_projector)
        self.template = template if template is not None else VicunaV1Template()
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.optimization = optimization if optimization is not None else Optimization()
        self.val_accuracy = MeanMetric()
        self._check_settings()
        self._nonfinite_in_a_row = 0
        self.skipped_steps = 0
        if init_weights is not None:
            load_weights(self, init_weights, strict_shapes=init_strict_shapes)

    def _check_settings(self) -> None:
        """Settings that cannot work, all reported at once, naming their recipe keys."""
        problems = []
        parts = self.part_names()
        unknown = sorted(set(self.optimization.learning_rates or {}) - set(parts))
        if unknown:
            problems.append(f"model.optimization.learning_rates: unknown part(s) {unknown}; allowed: {parts}")
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
        if problems:
            raise ValueError("VLM: " + "; ".join(problems))

    # ------------------------------------------------------------------ composition
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
        context = self.prefusion.context if self.prefusion is not None else None
        return {name: tok.num_tokens(self.encoder, training=training)
                for name, tok in self.tokenizers.items() if name != context}

    def llm_positions(self, visual: VisualSequence) -> Tensor:
        """(N,) bool: which visual positions reach the LLM (all but pre-fusion's context stream)."""
        if self.prefusion is None:
            return torch.ones_like(visual.kind, dtype=torch.bool)
        return visual.kind != visual.kinds.index(self.prefusion.context)

    def conversation_encoder(self, training: bool = False) -> ConversationEncoder:
        """What the data pipeline needs to tokenise conversations for this model; its length guard counts the
        visual tokens of the test-time budget, or of the training budget with ``training``."""
        return ConversationEncoder(
            text_tokenizer=self.llm.text_tokenizer,
            template=self.template,
            max_length=self.max_length,
            visual_tokens_per_image=sum(self.visual_tokens_per_image(training=training).values()),
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
        if self.object_annotator is not None:
            with stage(profiler, "mask_front_end"):
                objects = self.object_annotator(self.encoder, pixels, objects)
        with stage(profiler, "encoder"):
            features = self.encoder(pixels)
        with stage(profiler, "reduction"):
            streams = {name: tok(features, objects) for name, tok in self.tokenizers.items()}
            streams = self.scaler(streams)
        with stage(profiler, "projector"):
            return compose_streams(streams, self.projectors, self.shared_projector, self.tokenizers)

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
        text = self.llm.embed(input_ids)
        to_llm = self.llm_positions(visual)
        tokens, valid = visual.tokens[:, to_llm], visual.valid[:, to_llm]
        if self.prefusion is not None:
            instruction = mask.bool() & (input_ids >= 0)
            if labels is not None:
                instruction &= labels == IGNORE_INDEX  # pre-fusion never sees an answer
            with stage(profiler, "reduction"):
                text, tokens = self._prefuse(visual, to_llm, tokens, text, instruction, batch.image_counts(),
                                             batch.pixels.shape[-1])
        fused = fuse_visual_tokens(
            input_ids, text, mask, tokens, valid, IMAGE_TOKEN_ID, labels=labels,
            left_pad=for_generation, visual_kind=visual.kind[to_llm],
        )
        if self.summary_stream is not None:
            fused.hide_before(visual.kinds.index(self.summary_stream))
        return fused

    def _prefuse(self, visual: VisualSequence, to_llm: Tensor, tokens: Tensor, text: Tensor, instruction: Tensor,
                 counts: Tensor, image_size: int) -> tuple[Tensor, Tensor]:
        """Pre-fusion once per image with its sample's text; a sample's fused text is the mean over its images
        (LLaVA-Mini's rule for video frames). (I, N, D), (B, T, D) -> fused text (B, T, D), tokens (I, Nq, D).

        A text-only sample is pre-fused with a blank image (all-zero pixels after normalisation), as LLaVA-Mini's
        data loader gives it one (``ModalityPreFusion(text_only="zero_image")``); its tokens are dropped.
        """
        arange = torch.arange(len(counts), device=counts.device)
        owner = torch.repeat_interleave(arange, counts)  # (I,) sample of each image
        context, context_valid = visual.tokens[:, ~to_llm], visual.valid[:, ~to_llm]
        compressed = tokens
        text_only = arange[counts == 0]
        if self.prefusion.text_only == "zero_image" and len(text_only):
            blank = torch.zeros(len(text_only), 3, image_size, image_size, device=text.device, dtype=visual.tokens.dtype)
            blank_objects = ObjectMasks.empty(len(text_only), image_size, image_size, device=text.device)
            blank_visual = self.encode_images(blank, blank_objects)
            owner = torch.cat([owner, text_only])
            context = torch.cat([context, blank_visual.tokens[:, ~to_llm]])
            context_valid = torch.cat([context_valid, blank_visual.valid[:, ~to_llm]])
            compressed = torch.cat([compressed, blank_visual.tokens[:, to_llm]])
            counts = counts.clamp(min=1)
        fused, compressed = self.prefusion(context, context_valid, compressed, text[owner], instruction[owner])
        summed = torch.zeros_like(text).index_add(0, owner, fused.to(text.dtype))
        has = (counts > 0)[:, None, None]
        return torch.where(has, summed / counts.clamp(min=1)[:, None, None], text), compressed[: tokens.shape[0]]

    # ------------------------------------------------------------------ steps
    def forward(self, batch: VLMBatch, visual: VisualSequence | None = None) -> tuple[Tensor, Tensor]:
        """VLMBatch (+ its images already encoded) -> (logits (B, L, V), loss)."""
        fused = self.fuse(batch, visual=visual)
        logits = self.llm(fused.inputs_embeds, fused.attention(), fused.position_ids).logits
        return logits, causal_lm_loss(logits, fused.labels)

    def training_step(self, batch: VLMBatch, batch_idx: int) -> Tensor:
        varying = next((tok for tok in self.tokenizers.values() if tok.budget_variants()), None)
        if varying is None:
            _, loss = self(batch)
        else:  # M3: the loss averaged over every budget, one forward each
            losses = []
            for variant in varying.budget_variants():
                varying.use_budget(variant)
                losses.append(self(batch)[1])
            varying.use_budget(varying.budget_variants()[-1])
            loss = torch.stack(losses).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        if self.skipped_steps:
            self.log("train/skipped_steps", float(self.skipped_steps), batch_size=len(batch))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Never step on a non-finite loss or gradient: drop the gradients (AdamW then skips every parameter),
        count the step, and stop after ``optimization.max_nonfinite_steps`` such steps in a row.

        Ranks agree (the flag is summed over them), so a skip never desynchronises DDP or FSDP shards.
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.zeros((), device=self.device)
        bad = (~torch.isfinite(norm)).float()
        bad = self.trainer.strategy.reduce(bad, reduce_op="sum") if self._trainer is not None else bad
        if not bad.item():
            self._nonfinite_in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._nonfinite_in_a_row += 1
        log.warning("step %d: non-finite loss or gradient; optimizer step skipped (%d skipped, %d in a row)",
                    self.global_step, self.skipped_steps, self._nonfinite_in_a_row)
        limit = self.optimization.max_nonfinite_steps
        if self._nonfinite_in_a_row >= limit:
            raise FloatingPointError(
                f"training stopped at step {self.global_step}: {limit} optimizer steps in a row had a non-finite "
                f"loss or gradient ({self.skipped_steps} skipped in all). Check the data (NaN/Inf inputs), the "
                "learning rate and the precision; `model.optimization.max_nonfinite_steps` sets the limit"
            )

    def validation_step(self, batch: VLMBatch, batch_idx: int) -> None:
        visual = self.encode_images(batch.pixels, batch.objects)  # once, for the loss and for generation
        _, loss = self(batch, visual)
        predictions = self.generate(batch, visual=visual)
        correct = torch.tensor(
            [normalise_answer(p) == normalise_answer(a) for p, a in zip(predictions, batch.answers, strict=True)],
            dtype=torch.float,
        )
        self.val_accuracy.update(correct)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("val/accuracy", self.val_accuracy, prog_bar=True, batch_size=len(batch))

    def predict_step(self, batch: VLMBatch, batch_idx: int) -> list[dict[str, Any]]:
        start = time.perf_counter()
        prompt = self.fuse(batch, for_generation=True)
        visual_counts = ((prompt.visual_kind >= 0) & prompt.attention_mask.bool()).sum(1)  # (B,) tokens the LLM sees
        predictions = self.answer(prompt)
        seconds = (time.perf_counter() - start) / len(batch)
        return [
            {
                "key": key,
                "question_type": qtype,
                "prediction": prediction,
                "answer": answer,
                "visual_tokens": int(n),
                "seconds": seconds,
            }
            for key, qtype, prediction, answer, n in zip(
                batch.keys, batch.question_types, predictions, batch.answers, visual_counts.tolist(), strict=True
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
        stepper = self.llm_pruner.stepper(self.llm, prompt, use_cache) if self.llm_pruner is not None else None
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
