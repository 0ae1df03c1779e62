"""FitPrune: at chosen LLM layers, delete a fixed number of visual tokens, the lowest by cross x self attention.

Training-free, at inference: a ``DecodingPolicy``. A per-layer *deletion schedule* (how many visual tokens to
delete at each layer) is fitted offline on a few samples to meet a FLOPs budget (``fitprune_fit.py``,
``tokencompose fitprune``) and given here as a list or as the JSON file that command writes.

At a layer l whose count d_l > 0 (ywh187/FitPrune ``LLaVA_1.5/llava/model/language_model/modeling_llama.py``,
``LlamaAttention.forward``): take layer l's attention over the tokens entering it, max over heads (A); score
each visual key j as ``sum_{text q} A[q, j] * sum_{visual q} A[q, j] / n_visual``, the text queries being those
after the image; delete the d_l lowest from the layer's output (hidden states, residual, position ids). The
deletion follows layer l's attention, so layer l itself (its queries, keys and cache) still sees every token
entering it; running its MLP on the deleted tokens too and dropping them afterwards gives the kept tokens the
same values, since the residual and the MLP act token by token.

As the official KV-cache path, tokens are ranked once, at prefill; generated tokens are never deleted and
positions keep their original ids. Without a cache the same deletions are replayed at every step (the official
no-cache path would re-rank each step from the grown sequence; here the two paths give the same tokens). Each
row of a batch deletes min(d_l, its visual tokens) of its own; where rows differ (a text-only row) the
difference stays in the sequence masked out, so a row's answer does not depend on its batch.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor
from transformers import DynamicCache

from tokencompose.llm.base import DecodingPolicy
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.fusion import FusedInputs
from tokencompose.llm.layers import DecoderStack, base_model, stack_problems
from tokencompose.llm.visual_pruning import compact, lowest_visual
from tokencompose.parts import Parts


def load_schedule(path: str) -> list[int]:
    """The ``schedule`` list of a JSON file (as ``tokencompose fitprune`` writes it); errors name the file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"FitPrune: schedule_file={path!r} does not exist (relative paths are read from the "
                                f"working directory, {Path.cwd()}); write one with `tokencompose fitprune`")
    try:
        content = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"FitPrune: schedule_file={path!r} is not JSON: {error}") from error
    if not isinstance(content, dict) or not isinstance(content.get("schedule"), list):
        raise ValueError(f"FitPrune: schedule_file={path!r} has no `schedule` list (an object "
                         '{"schedule": [per-layer counts], ...} as `tokencompose fitprune` writes)')
    return content["schedule"]


def text_queries(valid: Tensor, visual: Tensor) -> Tensor:
    """valid (B, L), visual (B, L) bool -> (B, L) bool: the valid text positions after a row's first visual token
    (the official ``[35 + n_visual:]`` rows; earlier text cannot attend to the image anyway)."""
    return valid & ~visual & (visual.cumsum(1) > 0)


def fitprune_scores(attention: Tensor, visual: Tensor, text: Tensor) -> Tensor:
    """Post-softmax attention (B, H, L, L), visual and text query masks (B, L) -> score (B, L) of each key:
    (sum over text queries) x (sum over visual queries / n_visual) of the head-wise max attention."""
    a = attention.max(dim=1).values.float()  # (B, L, L): max over heads; rows are queries, columns keys
    cross = (a * text[..., None]).sum(1)  # (B, L)
    n_visual = visual.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
    return cross * (a * visual[..., None]).sum(1) / n_visual


class FitPrune(DecodingPolicy):
    """Delete ``schedule[l]`` visual tokens after LLM layer l's attention (the lowest by FitPrune's score).

    Args:
        schedule: per-layer deletion counts, one per LLM layer (all zero: no pruning).
        schedule_file: or a JSON file with them, as ``tokencompose fitprune`` writes (``{"schedule": [...]}``);
            relative to the working directory. Give exactly one of the two.
    """

    def __init__(self, schedule: list[int] | None = None, schedule_file: str | None = None) -> None:
        super().__init__()
        if (schedule is None) == (schedule_file is None):
            raise ValueError("FitPrune: give exactly one of `schedule` (per-layer deletion counts) and `schedule_file` "
                             f"(a JSON file from `tokencompose fitprune`); got schedule={schedule!r}, "
                             f"schedule_file={schedule_file!r}")
        self.source = "schedule" if schedule_file is None else f"schedule_file={schedule_file!r}"
        counts = load_schedule(schedule_file) if schedule_file is not None else schedule
        bad = [(i, c) for i, c in enumerate(counts) if not isinstance(c, int) or isinstance(c, bool) or c < 0]
        if bad or not counts:
            raise ValueError(f"FitPrune: {self.source} must be a non-empty list of counts >= 0, one per LLM layer; "
                             f"bad entries (layer, value): {bad or 'empty list'}")
        self.schedule: list[int] = list(counts)

    def problems(self, parts: Parts) -> list[str]:
        problems = stack_problems(parts.llm, "FitPrune", parts.attention)
        layers = base_model(parts.llm).config.num_hidden_layers
        if len(self.schedule) != layers:
            problems.append(f"{self.source}: {len(self.schedule)} per-layer counts, but the LLM (model.llm) has "
                            f"{layers} layers; fit a schedule for this LLM with `tokencompose fitprune`")
        context = parts.text_fusion.context_streams()
        visual = {name: tok.num_tokens(parts.encoder, training=False)
                  for name, tok in parts.tokenizers.items() if name not in context}
        if sum(self.schedule) > sum(visual.values()):
            problems.append(f"{self.source}: deletes {sum(self.schedule)} visual tokens in all, but an image brings "
                            f"{sum(visual.values())} to the LLM ({visual})")
        return problems

    def stepper(self, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> FitPruneStepper:
        return FitPruneStepper(self, lm, prompt, use_cache)

    def tokens_per_layer(self, visual_tokens: int, layers: int) -> list[int]:
        """The visual tokens entering each of ``layers`` layers (their keys stay in that layer's cache); layers
        past the schedule delete nothing."""
        counts, left = [], visual_tokens
        for layer in range(layers):
            counts.append(left)
            left -= min(left, self.schedule[layer] if layer < len(self.schedule) else 0)
        return counts

    def kept_fraction(self, visual_tokens: int, layers: int) -> float:
        return sum(self.tokens_per_layer(visual_tokens, layers)) / (layers * max(1, visual_tokens))

    def segments(self, layers: int) -> list[range]:
        """The layers in runs that see the same tokens: each run ends at a layer that deletes (or the last)."""
        ends = [layer for layer in range(layers - 1) if self.schedule[layer] > 0] + [layers - 1]
        return [range(start, end + 1) for start, end in zip([0, *[e + 1 for e in ends[:-1]]], ends, strict=True)]


class FitPruneStepper:
    """Greedy decoding steps with FitPrune's deletions, chosen at prefill: each layer's cache holds the tokens
    that entered it; without a cache the whole sequence is re-run with the same deletions."""

    def __init__(self, policy: FitPrune, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> None:
        if prompt.allowed is not None:
            raise ValueError("FitPrune cannot honour an attention policy's mask (see FitPrune.problems)")
        self.stack = DecoderStack(lm)
        self.policy, self.prompt, self.use_cache = policy, prompt, use_cache
        self.segments = policy.segments(len(self.stack))
        self.embeds, self.positions = prompt.inputs_embeds, prompt.position_ids
        self.valid = prompt.attention_mask.bool()
        self.visual = (prompt.visual_kind >= 0) & self.valid if prompt.visual_kind is not None else torch.zeros_like(self.valid)
        self.cache = DynamicCache() if use_cache else None
        self.entering: list[Tensor] = []  # per segment (B, K): which keys of its layers' caches are valid
        self.plans: list[tuple[Tensor, Tensor] | None] = []  # after each segment: (kept positions, their validity)
        self.deleted: dict[int, Tensor] = {}  # layer -> (B, L) bool over the prompt's positions deleted there

    def _forward_full(self) -> Tensor:
        """Every position (prompt + generated) through the layers, deleting after each segment -> logits (B, V)."""
        x, positions = self.embeds, self.positions
        grown = x.shape[1] - self.prompt.inputs_embeds.shape[1]
        valid = torch.cat([self.valid, torch.ones_like(self.valid[:, :1]).expand(-1, grown)], dim=1)
        visual = torch.cat([self.visual, torch.zeros_like(self.visual[:, :1]).expand(-1, grown)], dim=1)
        origin = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)  # (B, L) prompt position of each
        first = not self.plans
        for index, layers in enumerate(self.segments):
            count = self.policy.schedule[layers[-1]]
            if first:
                self.entering.append(valid)
            ranking = first and count > 0
            with self.stack.attention_of(layers[-1]) if ranking else nullcontext([]) as captured:
                x = self.stack.run(x, positions, valid, layers, x.shape[1], self.cache)
            if first:
                self.plans.append(self._plan(layers[-1], count, captured[-1], valid, visual, origin) if ranking else None)
            plan = self.plans[index]
            if plan is None:
                continue
            keep, kept_valid = plan
            if grown:  # generated tokens come after the prompt's and are never deleted
                new = torch.arange(valid.shape[1] - grown, valid.shape[1], device=x.device)
                keep = torch.cat([keep, new.expand(x.shape[0], -1)], dim=1)
                kept_valid = torch.cat([kept_valid, torch.ones_like(kept_valid[:, :1]).expand(-1, grown)], dim=1)
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))  # (B, L', D)
            positions, visual, origin = positions.gather(1, keep), visual.gather(1, keep), origin.gather(1, keep)
            valid = kept_valid
            visual = visual & valid
        return self.stack.logits(x)

    def _plan(self, layer: int, count: int, attention: Tensor, valid: Tensor, visual: Tensor,
              origin: Tensor) -> tuple[Tensor, Tensor]:
        """Layer ``layer``'s attention (B, H, L, L) over its tokens -> (kept positions (B, L'), their validity)."""
        dropped = lowest_visual(fitprune_scores(attention, visual, text_queries(valid, visual)), visual, count)
        deleted = torch.zeros_like(self.valid)
        deleted.scatter_(1, origin, dropped)  # (B, L_prompt)
        self.deleted[layer] = deleted
        return compact(dropped, valid)

    def first(self) -> Tensor:
        return self._forward_full()

    def next(self, embeds: Tensor, positions: Tensor) -> Tensor:
        if not self.use_cache:
            self.embeds = torch.cat([self.embeds, embeds], dim=1)
            self.positions = torch.cat([self.positions, positions], dim=1)
            return self._forward_full()
        x = embeds
        for index, layers in enumerate(self.segments):  # each segment's caches: the tokens that entered it
            self.entering[index] = torch.cat([self.entering[index], torch.ones_like(self.entering[index][:, :1])], dim=1)
            x = self.stack.run(x, positions, self.entering[index], layers, 1, self.cache)
        return self.stack.logits(x)
