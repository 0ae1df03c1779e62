"""Fitting a FitPrune deletion schedule to a FLOPs budget, and the command that writes it for a recipe.

Re-derived from ywh187/FitPrune ``LLaVA_1.5/llava/eval/statistical_analysis.py`` (``compute_attention_weights``,
``fit_model``, ``rest_flops``, ``calculate_origin_flops``):

1. Reference statistics: each sample through the unpruned LLM; per layer the head-wise max attention's visual
   mass from the text queries after the image (mean over those queries) and from the visual queries (/ n).
2. For an alpha, each sample goes through the LLM layer by layer. Before a layer, if the FLOPs spent so far plus
   those the remaining layers would take at the current token counts meet the budget, stop. Otherwise, per
   sample: sort the visual tokens by their cross (resp. self) mass; the most of the lowest that can go while
   the rest keeps (1 - alpha) of the reference mass (``i - 1`` at the first ``i`` that falls below); delete the
   tokens in both sets. The schedule is each layer's deletions summed over samples, floor-divided by their count.
3. Binary search on alpha in [0, 1] to a width of 0.01: the smallest alpha that meets the budget.

FLOPs count the visual tokens only, with the official per-layer formula (dense q/k/v, GQA ignored):
attention ``3 n h^2 + 2 n^2 h`` at the tokens entering a layer, output projection + MLP ``n h^2 + 3 n h i`` at
those leaving it. Kept different from the official on purpose: it prints the schedule of the *last* alpha tried,
which can be one that missed the budget; this returns the schedule of the smallest alpha that met it. Where
every visual token but one could go (the official loop never breaks and reuses a stale count), n - 1 go.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from tokencompose.llm.fitprune import text_queries
from tokencompose.llm.layers import DecoderStack, base_model, stack_problems

if TYPE_CHECKING:
    from tokencompose.llm.causal_lm import CausalLM
    from tokencompose.model import VLM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMDims:
    """The widths and depth the FLOPs formula needs."""

    hidden: int
    intermediate: int
    layers: int

    def attention(self, n: int) -> int:
        """q/k/v projections + QK^T + AV for n tokens in one layer."""
        return 3 * n * self.hidden**2 + 2 * n * n * self.hidden

    def tail(self, n: int) -> int:
        """Output projection + gated MLP for n tokens in one layer."""
        return n * self.hidden**2 + 3 * n * self.hidden * self.intermediate

    def rest(self, n: int, layer: int) -> int:
        """The official ``rest_flops``: this layer's tail and every later layer whole, at n tokens."""
        return self.tail(n) + (self.attention(n) + self.tail(n)) * (self.layers - 1 - layer)

    def full(self, n: int) -> int:
        """Every layer at n tokens (the official ``calculate_origin_flops`` for n = 576)."""
        return (self.attention(n) + self.tail(n)) * self.layers

    def of_schedule(self, schedule: list[int], n: int) -> int:
        """n visual tokens through the layers, ``schedule[l]`` deleted after layer l's attention."""
        total = 0
        for count in schedule:
            total += self.attention(n)
            n -= min(n, count)
            total += self.tail(n)
        return total


LLAMA_7B = LLMDims(hidden=4096, intermediate=11008, layers=32)


class Probe(Protocol):
    """One sample's prompt, run through the LLM one layer at a time with deletions on the way."""

    @property
    def visual_tokens(self) -> int:
        """The unpruned prompt's visual tokens."""

    def reset(self) -> None:
        """Back to the unpruned prompt, before layer 0."""

    def run_layer(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """Run ``layer`` (the next one) on the current tokens -> its head-wise max attention (L, L), the visual
        positions (L,) bool and the text queries (L,) bool."""

    def delete(self, positions: Tensor) -> None:
        """Drop these positions (K,) from the layer's output."""


def visual_masses(attention: Tensor, visual: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
    """Head-wise max attention (L, L), masks (L,) -> per visual token (n,): the mean attention from the text
    queries and the sum from the visual queries / n (the official ``focus_attn_weights``, ``attn_weights_img_part``)."""
    a = attention.double()
    cross = a[text][:, visual].sum(0) / max(1, int(text.sum()))
    own = a[visual][:, visual].sum(0) / max(1, int(visual.sum()))
    return cross, own


def deletable(values: Tensor, floor: float) -> int:
    """How many of the lowest ``values`` can go while the rest sums to at least ``floor``: ``i - 1`` at the
    first ``i`` whose remainder falls below (0 at least), n - 1 if none does."""
    remaining = values.sum() - torch.cat([values.new_zeros(1), values.sort().values.cumsum(0)[:-1]])  # (n,)
    return max(int((remaining >= floor).sum()) - 1, 0)


def fit_deletions(cross: Tensor, own: Tensor, reference: tuple[float, float], alpha: float) -> Tensor:
    """Per visual token masses (n,), the unpruned (cross, self) totals -> indices (K,) of the visual tokens
    among the deletable lowest of both."""
    lowest_cross = cross.argsort()[: deletable(cross, reference[0] * (1 - alpha))]
    lowest_own = own.argsort()[: deletable(own, reference[1] * (1 - alpha))]
    both = torch.zeros(len(cross), dtype=torch.int8, device=cross.device)
    both[lowest_cross] += 1
    both[lowest_own] += 1
    return (both == 2).nonzero().flatten()


def reference_masses(probes: list[Probe], layers: int) -> list[list[tuple[float, float]]]:
    """Per sample, per layer: the unpruned (cross, self) visual attention masses."""
    out = []
    for probe in probes:
        probe.reset()
        masses = [visual_masses(*probe.run_layer(layer)) for layer in range(layers)]
        out.append([(float(c.sum()), float(s.sum())) for c, s in masses])
    return out


@dataclass
class FitPass:
    reached: bool
    schedule: list[int]
    flops: float  # per sample when the pass stopped (spent + forecast), as a fraction of the unpruned FLOPs


def fit_pass(probes: list[Probe], reference: list[list[tuple[float, float]]], alpha: float, dims: LLMDims,
             budget: float) -> FitPass:
    """One official ``fit_model`` pass at ``alpha``: does it meet ``budget`` (a fraction of the unpruned FLOPs
    of the samples' visual tokens), and with which schedule."""
    for probe in probes:
        probe.reset()
    counts = [probe.visual_tokens for probe in probes]
    full = sum(dims.full(n) for n in counts)
    deleted = [0] * dims.layers
    spent = 0
    for layer in range(dims.layers):
        spent += sum(dims.attention(n) for n in counts)
        forecast = spent + sum(dims.rest(n, layer) for n in counts)
        if forecast <= budget * full:
            return FitPass(True, [d // len(probes) for d in deleted], forecast / full)
        for index, probe in enumerate(probes):
            attention, visual, text = probe.run_layer(layer)
            drop = fit_deletions(*visual_masses(attention, visual, text), reference[index][layer], alpha)
            probe.delete(visual.nonzero().flatten()[drop])
            counts[index] -= len(drop)
            deleted[layer] += len(drop)
            spent += dims.tail(counts[index])
    return FitPass(False, [d // len(probes) for d in deleted], spent / full)


@dataclass
class FitResult:
    schedule: list[int]
    alpha: float
    flops: float  # the fit's FLOPs per sample (its accounting), as a fraction of the unpruned FLOPs
    passes: int


def fit_schedule(probes: list[Probe], dims: LLMDims, budget: float, tolerance: float = 0.01) -> FitResult:
    """The official binary search on alpha in [0, 1]: the schedule of the smallest alpha found that meets
    ``budget`` (a fraction of the unpruned FLOPs of the visual tokens in the LLM)."""
    if not probes:
        raise ValueError("fit_schedule: no samples")
    if not 0.0 < budget < 1.0 or tolerance <= 0.0:
        raise ValueError(f"fit_schedule: budget={budget} must be in (0, 1) and tolerance={tolerance} > 0")
    reference = reference_masses(probes, dims.layers)
    low, high, best, passes = 0.0, 1.0, None, 0
    while high - low > tolerance + 1e-6:  # the official stopping rule, 7 passes for 0.01
        alpha = (low + high) / 2
        result, passes = fit_pass(probes, reference, alpha, dims, budget), passes + 1
        if result.reached:
            high, best = alpha, result
        else:
            low = alpha
    if best is None:  # no alpha tried met it: every deletion allowed is the last resort
        best, passes = fit_pass(probes, reference, 1.0, dims, budget), passes + 1
        if not best.reached:
            raise ValueError(f"fit_schedule: budget={budget} cannot be met even deleting all visual tokens but one "
                             f"per layer step ({best.flops:.4f} of the FLOPs at best)")
    return FitResult(best.schedule, high, best.flops, passes)


class StackProbe:
    """A ``Probe`` over the LLM's own decoder layers (``DecoderStack``, eager attention) for one unpadded prompt:
    embeds (L, D), positions (L,), visual (L,) bool."""

    def __init__(self, stack: DecoderStack, embeds: Tensor, positions: Tensor, visual: Tensor) -> None:
        self.stack = stack
        self.prompt = embeds[None], positions[None], visual  # (1, L, D), (1, L), (L,)
        self.reset()

    @property
    def visual_tokens(self) -> int:
        return int(self.prompt[2].sum())

    def reset(self) -> None:
        self.x, self.positions, self.visual = self.prompt

    def run_layer(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        valid = torch.ones_like(self.visual)[None]  # (1, L)
        with self.stack.attention_of(layer) as captured:
            self.x = self.stack.run(self.x, self.positions, valid, range(layer, layer + 1), self.x.shape[1])
        attention = captured[-1][0].max(dim=0).values  # (H, L, L) -> (L, L): max over heads
        return attention, self.visual, text_queries(valid, self.visual[None])[0]

    def delete(self, positions: Tensor) -> None:
        keep = torch.ones_like(self.visual)
        keep[positions] = False
        self.x, self.positions, self.visual = self.x[:, keep], self.positions[:, keep], self.visual[keep]


def llm_dims(lm: CausalLM) -> LLMDims:
    """The FLOPs formula's dimensions of a ``CausalLM``."""
    config = base_model(lm).config
    return LLMDims(config.hidden_size, config.intermediate_size, config.num_hidden_layers)


def sample_probes(model: VLM, shards: str, samples: int) -> list[StackProbe]:
    """The generation prompts of the first ``samples`` samples of ``shards`` that have an image, fused by the
    model (one at a time, so without padding), as probes. Text-only samples are skipped and counted."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from tokencompose.data import ShardDataModule

    stack = DecoderStack(model.llm)
    loader = ShardDataModule(predict=shards, batch_size=1, transform=model.data_transform()).predict_dataloader()
    probes, text_only = [], 0
    for batch in loader:  # a finite stream: every shard once
        batch = move_data_to_device(batch, model.device)
        with torch.enable_grad() if model.needs_autograd else torch.no_grad():
            prompt = model.fuse(batch, for_generation=True)
        valid = prompt.attention_mask[0].bool()
        visual = (prompt.visual_kind[0] >= 0)[valid]
        if not visual.any():
            text_only += 1
            continue
        probes.append(StackProbe(stack, prompt.inputs_embeds[0, valid].detach(), prompt.position_ids[0, valid], visual))
        if len(probes) == samples:
            break
    if text_only:
        log.info("fitprune: %d text-only samples skipped", text_only)
    if not probes:
        raise ValueError(f"fitprune: shards={shards!r} have no sample with an image to fit on")
    if len(probes) < samples:
        log.warning("fitprune: %s has %d samples with an image; fitting on those (asked for %d)", shards, len(probes), samples)
    return probes


def fitprune_fit(recipe: list[str], out: str, budget: float, shards: str, ckpt_path: str | None = None,
                 samples: int = 16, tolerance: float = 0.01, device: str | None = None) -> FitResult:
    """Fit a FitPrune deletion schedule for a recipe's model and write it as the JSON file that
    ``FitPrune(schedule_file=...)`` reads (``{"schedule": [...], ...}`` with how it was fitted).

    Args:
        recipe: the recipe as command-line arguments, as ``fit`` takes it: ``--config RECIPE`` (repeatable) and
            inline overrides. Its decoding policy is not used (the fit runs the unpruned LLM) and need not load;
            its LLM needs ``attn_implementation: eager``.
        out: the JSON file to write; written only once the fit has succeeded.
        budget: the FLOPs the visual tokens may cost in the LLM, as a fraction of their unpruned cost, in (0, 1).
            The official ``--reduction_ratio`` is 1 - budget (its 90 % schedule: budget 0.1).
        shards: the samples to fit on (a benchmark's or training shards, as ``data.predict`` takes them); the
            generation prompt of each (the conversation without its last answer) is what the LLM sees.
        ckpt_path: weights to fit with (loaded with weights_only, every tensor must fit); None: the recipe's own.
        samples: how many samples with an image to fit on (the first ones, in shard order).
        tolerance: the binary search on alpha stops when its interval is this narrow (official 0.01).
        device: where to run the model (default: CUDA when available, else CPU).
    """
    from tokencompose.recipes import model_from_args

    if samples < 1:
        raise ValueError(f"fitprune: samples={samples}; must be >= 1")
    if not 0.0 < budget < 1.0:
        raise ValueError(f"fitprune: budget={budget}; must be in (0, 1): the fraction of the visual tokens' LLM FLOPs "
                         "to keep (0.1 for the official 90 % reduction)")
    model = model_from_args([*recipe, "--model.decoding", "null"], ckpt_path)
    problems = stack_problems(model.llm, "fitprune", model.attention)
    if problems:
        raise ValueError("fitprune: " + "; ".join(problems))
    model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    dims = llm_dims(model.llm)
    with torch.no_grad():
        probes = sample_probes(model, shards, samples)
        result = fit_schedule(probes, dims, budget, tolerance)
    visual = sum(model.visual_tokens_per_image().values())
    record = {
        "schedule": result.schedule, "flops_budget": budget, "reduction_ratio": round(1.0 - budget, 6),
        "alpha": result.alpha, "fit_flops": result.flops,
        "schedule_flops": dims.of_schedule(result.schedule, visual) / dims.full(visual),
        "visual_tokens": visual, "samples": len(probes), "llm": asdict(dims),
        "recipe": list(recipe), "checkpoint": ckpt_path, "shards": shards,
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, path)  # a reader never sees half a file; an old one stays until this one is whole
    log.info("fitprune: schedule %s (alpha %.4f, %.4f of the FLOPs) written to %s", result.schedule, result.alpha,
             result.flops, path)
    return result
