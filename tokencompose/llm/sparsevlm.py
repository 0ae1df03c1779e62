"""SparseVLM: text-guided, progressive pruning of the visual tokens inside the LLM, with recycling.

Training-free, at inference: a ``DecodingPolicy`` that runs the LLM's own decoder layers (``DecoderStack``).
The behaviour is that of Gumpest/SparseVLMs v1.5 (commit 535f8ba: ``llava/model/language_model/
modelling_sparse_llama.py`` ``LlamaDynamicvitModel.forward``, ``score.py`` ``attn_postprocess_topk``, ``utils.py``
``cluster_and_merge``; the 96 list from ``score.py`` at 9e1f649, its ``USE_VERSION=1_0`` lists):

1. Raters, once, from the input embeddings: the text tokens t after the image whose relevance
   ``mean over visual v of softmax_t(v . t)`` exceeds the mean relevance.
2. At each pruning layer l (default 2, 6, 15), from that layer's own attention (post-softmax, RoPE, causal):
   each visual token's score is its attention from the rater rows, averaged over heads and raters; the top
   ``keep[i]`` visual tokens stay. The cut is after layer l: layers up to l see every token.
3. Recycling: the top 30 % of the pruned tokens by score (``int(0.3 P) + 1``) are clustered with DPC-KNN into
   ``m // 10 + 1`` tokens (``token_merging``), their means inserted after the kept visual tokens; they count as
   visual tokens at the next pruning layer.
4. Positions are renumbered contiguously after each cut (the official truncates ``position_ids``), so each layer
   sees its own tokens at 0..n-1 and a generated token at n; each layer's KV cache keeps its own tokens.

The kept set is chosen once, at prefill, the same with and without a KV cache (without, the selection and the
clusters found at prefill are re-applied at every step). Departures, for a batch and for small models: rows are
pruned one by one and left-padded again; with several images in a row "after the image" means after the first
visual token and the recycled tokens follow the last one; a keep count at or above the current number of visual
tokens keeps all of them (the official ``min(k, n - 1)`` would drop and recycle one; never at the published
budgets); a row without text after its image rates with its last token; the DPC-KNN tie-break noise has a fixed
seed. The first release (91fb6d9) chose the counts from ``rank`` of the rater attention (``rank * 13.5``) at
layers 2, 6, 15, 19; v1.5 replaced that with the fixed lists used here.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache

from tokencompose.llm.base import DecodingPolicy
from tokencompose.llm.causal_lm import CausalLM
from tokencompose.llm.fusion import FusedInputs
from tokencompose.llm.layers import DecoderStack, base_model, stack_problems
from tokencompose.llm.token_merging import cluster_weights, dpc_knn_clusters
from tokencompose.parts import Parts

PUBLISHED_LAYERS = (2, 6, 15)
#: the published per-layer keep counts of the 576 LLaVA-1.5 visual tokens, by budget
PUBLISHED_KEEP = {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)}
PUBLISHED_TOKENS = 576
RECYCLE_FRACTION = 0.3  # of the pruned tokens, the best-scored share that is clustered
TOKENS_PER_CLUSTER = 10


def text_raters(embeds: Tensor, visual: Tensor, valid: Tensor) -> Tensor:
    """Input embeddings (B, L, D), visual and valid (B, L) bool -> raters (B, L) bool: the text tokens after the
    first visual token whose mean softmax relevance to the visual tokens exceeds the mean."""
    raters = torch.zeros_like(valid)
    for row in range(embeds.shape[0]):
        image = visual[row].nonzero().flatten()
        if not len(image):
            continue
        text = (valid[row] & ~visual[row]).nonzero().flatten()
        text = text[text > image[0]]
        if not len(text):  # nothing to rate with but the last token
            raters[row, valid[row].nonzero().flatten()[-1]] = True
            continue
        relevance = (embeds[row, image].float() @ embeds[row, text].float().T).softmax(-1).mean(0)  # (T,)
        chosen = text[relevance > relevance.mean()]
        raters[row, chosen if len(chosen) else text] = True
    return raters


def rater_scores(attention: Tensor, raters: Tensor) -> Tensor:
    """Attention weights (B, H, L, L), raters (B, L) bool -> (B, L): each key's attention from the rater rows,
    mean over heads and raters."""
    weights = raters.float() / raters.sum(1, keepdim=True).clamp(min=1)  # (B, L)
    return torch.einsum("bq,bqk->bk", weights, attention.float().mean(1))


def positions_of(valid: Tensor) -> Tensor:
    """(B, L) bool -> (B, L) contiguous positions of the valid tokens (0 for padding)."""
    return (valid.long().cumsum(1) - 1).clamp(min=0)


@dataclass
class Pruning:
    """One cut on a batch: the new rows as a linear map of the old ones, left-padded.

    select (B, L', L): a kept token's row is one-hot, a recycled token's row averages its cluster, padding is 0.
    valid, visual, raters (B, L') bool for the new rows; per row, the old positions of the kept visual tokens,
    of the recycled tokens (best score first) and their cluster index (``assignment``).
    """

    select: Tensor
    valid: Tensor
    visual: Tensor
    raters: Tensor
    kept: list[Tensor]
    recycled: list[Tensor]
    assignment: list[Tensor]

    def apply(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L', D); in float32 so that a cluster mean is not rounded to the weights' dtype."""
        return (self.select @ x.float()).to(x.dtype)


@dataclass
class RowCut:
    """One row's cut: the old positions copied before the recycled tokens, the recycled tokens' averaging rows
    (C, L), the positions copied after them; the kept visual positions, the recycled ones and their clusters."""

    before: Tensor
    merged: Tensor
    after: Tensor
    kept: Tensor
    recycled: Tensor
    assignment: Tensor


def cut_row(score: Tensor, hidden: Tensor, valid: Tensor, visual: Tensor, keep: int, recycle: bool) -> RowCut | None:
    """One row: score (L,), the layer's output (L, D), valid and visual (L,) bool -> its cut (None: nothing cut)."""
    image = visual.nonzero().flatten()
    if not 0 < keep < len(image):
        return None
    scores = score[image]
    chosen = torch.zeros(len(image), dtype=torch.bool, device=image.device)
    chosen[scores.topk(keep).indices] = True
    kept, pruned = image[chosen], image[~chosen]
    recycled, assignment = image[:0], image[:0]
    merged = hidden.new_zeros(0, len(valid), dtype=torch.float32)
    if recycle:  # the best-scored 30 % of the pruned, best first, clustered into one token per 10 (+ 1)
        recycled = pruned[scores[~chosen].topk(int(len(pruned) * RECYCLE_FRACTION) + 1).indices]
        clusters = len(recycled) // TOKENS_PER_CLUSTER + 1
        assignment = dpc_knn_clusters(hidden[recycled][None], clusters)[0][0]  # (m,)
        merged = hidden.new_zeros(clusters, len(valid), dtype=torch.float32)
        merged[:, recycled] = cluster_weights(assignment[None], clusters)[0]  # (C, m) into (C, L)
    stay = valid.nonzero().flatten()
    stay = stay[~torch.isin(stay, pruned)]
    split = int((stay <= image[-1]).sum())  # the recycled tokens follow the last visual token
    return RowCut(stay[:split], merged, stay[split:], kept, recycled, assignment)


def prune_step(score: Tensor, hidden: Tensor, valid: Tensor, visual: Tensor, raters: Tensor, keep: list[int],
               recycle: bool) -> Pruning | None:
    """Score (B, L), the layer's output (B, L, D), valid/visual/raters (B, L) bool, keep counts per row ->
    the cut, rows left-padded again (None when no row loses a token)."""
    batch, length = valid.shape
    cuts = [cut_row(score[b], hidden[b], valid[b], visual[b], keep[b], recycle) for b in range(batch)]
    if all(cut is None for cut in cuts):
        return None
    whole = valid.nonzero().flatten()[:0]
    cuts = [cut or RowCut(valid[b].nonzero().flatten(), hidden.new_zeros(0, length, dtype=torch.float32), whole,
                          visual[b].nonzero().flatten(), whole, whole) for b, cut in enumerate(cuts)]
    new_length = max(len(c.before) + len(c.merged) + len(c.after) for c in cuts)
    select = hidden.new_zeros(batch, new_length, length, dtype=torch.float32)
    new_valid, new_visual, new_raters = (valid.new_zeros(batch, new_length) for _ in range(3))
    for b, cut in enumerate(cuts):
        block = torch.cat([F.one_hot(cut.before, length).float(), cut.merged, F.one_hot(cut.after, length).float()])
        start = new_length - len(block)  # left padding
        select[b, start:] = block  # (n, L)
        new_valid[b, start:] = True
        recycled = torch.ones(len(cut.merged), dtype=torch.bool, device=valid.device)
        new_visual[b, start:] = torch.cat([visual[b, cut.before], recycled, visual[b, cut.after]])
        new_raters[b, start:] = torch.cat([raters[b, cut.before], ~recycled, raters[b, cut.after]])
    return Pruning(select, new_valid, new_visual, new_raters, [c.kept for c in cuts], [c.recycled for c in cuts],
                   [c.assignment for c in cuts])


class SparseVLM(DecodingPolicy):
    """Prune the visual tokens after each of ``layers``, keeping ``keep[i]`` of them after layer ``layers[i]``.

    Args:
        budget: 192, 128, 96 or 64: the published keep lists for 576 visual tokens (``PUBLISHED_KEEP``) at
            layers 2, 6, 15. For N != 576 visual tokens each count is scaled to ``max(1, round(k * N / 576))``.
        keep: explicit keep counts, one per layer, never increasing (set ``budget: null``).
        layers: the pruning layers, increasing; each ranks with its own attention and is cut after.
        recycle: cluster the best-scored 30 % of the pruned tokens into merged tokens (v1.5's recycling).
    """

    def __init__(self, budget: int | None = 192, keep: list[int] | None = None,
                 layers: tuple[int, ...] = PUBLISHED_LAYERS, recycle: bool = True) -> None:
        super().__init__()
        layers = tuple(layers)
        if (budget is None) == (keep is None):
            raise ValueError(f"SparseVLM: give `budget` or `keep`, one of them (budget={budget}, keep={keep})")
        if budget is not None and budget not in PUBLISHED_KEEP:
            raise ValueError(f"SparseVLM: budget={budget}; allowed: {sorted(PUBLISHED_KEEP)} (or `keep` counts)")
        if budget is not None and len(layers) != len(PUBLISHED_LAYERS):
            raise ValueError(f"SparseVLM: budget={budget} has {len(PUBLISHED_LAYERS)} keep counts but layers={list(layers)}; "
                             "give `keep` for other layers")
        if any(b <= a for a, b in pairwise(layers)) or (layers and layers[0] < 0):
            raise ValueError(f"SparseVLM: layers={list(layers)}; must be increasing layer indices >= 0")
        if keep is not None:
            if len(keep) != len(layers):
                raise ValueError(f"SparseVLM: keep={keep} has {len(keep)} counts for layers={list(layers)}")
            if any(k < 1 for k in keep) or any(b > a for a, b in pairwise(keep)):
                raise ValueError(f"SparseVLM: keep={keep}; must be counts >= 1 that never increase")
        self.budget = budget
        self.keep = None if keep is None else tuple(keep)
        self.layers = layers
        self.recycle = recycle

    def keep_counts(self, visual_tokens: int) -> tuple[int, ...]:
        """The keep count of each pruning layer for N visual tokens (the published list exactly at N = 576)."""
        if self.keep is not None:
            return self.keep
        published = PUBLISHED_KEEP[self.budget]
        if visual_tokens == PUBLISHED_TOKENS:
            return published
        return tuple(max(1, math.floor(k * visual_tokens / PUBLISHED_TOKENS + 0.5)) for k in published)

    def visual_counts(self, visual_tokens: int, layers: int) -> list[int]:
        """How many visual tokens (kept and recycled) each of the LLM's ``layers`` layers processes."""
        counts, current = [], visual_tokens
        cuts = dict(zip(self.layers, self.keep_counts(visual_tokens), strict=True))
        for layer in range(layers):
            counts.append(current)
            if layer in cuts and cuts[layer] < current:
                pruned = current - cuts[layer]
                recycled = (int(pruned * RECYCLE_FRACTION) + 1) // TOKENS_PER_CLUSTER + 1 if self.recycle else 0
                current = cuts[layer] + recycled
        return counts

    def kept_fraction(self, visual_tokens: int, layers: int) -> float:
        return sum(self.visual_counts(visual_tokens, layers)) / (layers * max(1, visual_tokens))

    def problems(self, parts: Parts) -> list[str]:
        problems = stack_problems(parts.llm, "SparseVLM", parts.attention)
        depth = base_model(parts.llm).config.num_hidden_layers
        if self.layers and self.layers[-1] >= depth:
            problems.append(f"layers={list(self.layers)}: the LLM has {depth} layers (indices 0..{depth - 1})")
        context = parts.text_fusion.context_streams()
        tokens = sum(tok.num_tokens(parts.encoder, training=False)
                     for name, tok in parts.tokenizers.items() if name not in context)
        keep = self.keep_counts(tokens)
        if keep and keep[0] > tokens:
            problems.append(f"keep counts {list(keep)} exceed the {tokens} visual tokens per image")
        return problems

    def stepper(self, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> SparseVLMStepper:
        return SparseVLMStepper(self, lm, prompt, use_cache)


class SparseVLMStepper:
    """Greedy decoding steps with SparseVLM's cuts, chosen at prefill. The layers run in segments, each ending
    with a pruning layer; segment i has its own valid mask and positions (and, with a cache, its layers' caches)."""

    def __init__(self, policy: SparseVLM, lm: CausalLM, prompt: FusedInputs, use_cache: bool) -> None:
        if prompt.allowed is not None:
            raise ValueError("SparseVLM cannot honour an attention policy's mask (see SparseVLM.problems)")
        self.stack = DecoderStack(lm)
        self.policy, self.use_cache = policy, use_cache
        self.embeds, self.positions = prompt.inputs_embeds, prompt.position_ids
        self.valid = prompt.attention_mask.bool()
        self.visual = (prompt.visual_kind >= 0) & self.valid if prompt.visual_kind is not None else torch.zeros_like(self.valid)
        bounds = [-1, *policy.layers, len(self.stack) - 1]
        self.segments = [range(a + 1, b + 1) for a, b in pairwise(bounds)]
        self.cache = DynamicCache() if use_cache else None
        self.steps = 0
        self.raters: Tensor | None = None
        self.prunings: list[Pruning | None] = []
        self.segment_valid: list[Tensor] = []  # per segment: its valid keys (with a cache, grown every step)
        self.segment_last: list[Tensor] = []  # per segment: the position of the prompt's last token (B, 1)

    def first(self) -> Tensor:
        x, positions, valid, visual = self.embeds, self.positions, self.valid, self.visual
        raters = self.raters = text_raters(x, visual, valid)
        keep = [self.policy.keep_counts(int(n)) for n in visual.sum(1)]  # (B,) rows, one count per layer
        for i, layers in enumerate(self.segments):
            cut = i < len(self.policy.layers)
            with self.stack.attention_of(layers[-1]) if cut else nullcontext([]) as captured:
                x = self.stack.run(x, positions, valid, layers, x.shape[1], self.cache)
            self.segment_valid.append(valid)
            self.segment_last.append(positions[:, -1:])
            if not cut:
                continue
            pruning = prune_step(rater_scores(captured[-1], raters), x, valid, visual, raters,
                                 [counts[i] for counts in keep], self.policy.recycle)
            self.prunings.append(pruning)
            if pruning is not None:
                x, valid, visual, raters = pruning.apply(x), pruning.valid, pruning.visual, pruning.raters
                positions = positions_of(valid)
        return self.stack.logits(x)

    def next(self, embeds: Tensor, positions: Tensor) -> Tensor:
        self.steps += 1
        one = torch.ones_like(self.valid[:, :1])
        if not self.use_cache:
            return self._rerun(embeds, positions, one)
        x = embeds
        for i, layers in enumerate(self.segments):
            self.segment_valid[i] = torch.cat([self.segment_valid[i], one], dim=1)
            here = positions - self.segment_last[0] + self.segment_last[i]  # after segment i's renumbering
            x = self.stack.run(x, here, self.segment_valid[i], layers, 1, self.cache)
        return self.stack.logits(x)

    def _rerun(self, embeds: Tensor, positions: Tensor, one: Tensor) -> Tensor:
        """No cache: the whole sequence again, with the prefill's cuts re-applied to the prompt part."""
        self.embeds = torch.cat([self.embeds, embeds], dim=1)
        self.positions = torch.cat([self.positions, positions], dim=1)
        self.valid = torch.cat([self.valid, one], dim=1)
        x, positions, valid, grown = self.embeds, self.positions, self.valid, self.steps
        for i, layers in enumerate(self.segments):
            x = self.stack.run(x, positions, valid, layers, x.shape[1])
            pruning = self.prunings[i] if i < len(self.prunings) else None
            if pruning is not None:  # generated tokens are never pruned: they follow the cut prompt
                x = torch.cat([pruning.apply(x[:, :-grown]), x[:, -grown:]], dim=1)
                valid = torch.cat([pruning.valid, one.expand(-1, grown)], dim=1)
                positions = positions_of(valid)
        return self.stack.logits(x)
