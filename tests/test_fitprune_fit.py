"""FitPrune's schedule fit: the FLOPs formula and the alpha search, against the official code re-derived.

ywh187/FitPrune ``LLaVA_1.5/llava/eval/statistical_analysis.py`` @ 2b70a5d8e795df3c4a23b03795e1d77657b14465
(``compute_attention_weights``, ``fit_model``, ``rest_flops``, ``calculate_origin_flops``, the binary search);
the published schedules from ``LLaVA_1.5/llava/model/language_model/modeling_llama.py`` @
36bb1160d77a3e29a58d3fdc0700f86f03b5c5d6 (``delete_scheme``).
"""

import json

import pytest
import torch

from tests.recipe_utils import REPO
from tests.test_fitprune import fitprune_model
from tokencompose.llm.fitprune_fit import (
    LLAMA_7B,
    LLMDims,
    StackProbe,
    fit_pass,
    fit_schedule,
    reference_masses,
)
from tokencompose.llm.layers import DecoderStack


def official_rest_flops(tk_num, layer_idx, h=4096, i=11008, layers=32):
    """statistical_analysis.py's arithmetic verbatim, with LLaMA-7B's 4096 / 11008 / 32 as defaults."""
    res_flops = tk_num * h**2 + 3 * i * h * tk_num
    left_layer = layers - 1 - layer_idx
    res_flops += ((tk_num * h * h * 3 + tk_num * tk_num * h + tk_num * h * tk_num + tk_num * h * h)
                  + (h * i * tk_num * 3)) * left_layer
    return res_flops


def official_origin_flops():
    return ((576 * 4096 * 4096 * 3 + 576 * 576 * 4096 + 576 * 4096 * 576 + 576 * 4096 * 4096) + (4096 * 11008 * 576 * 3)) * 32


PUBLISHED_90 = [262, 153, 80, 19, 13, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
PUBLISHED_50 = [3, 7, 49, 24, 29, 17, 59, 41, 26, 8, 10, 6, 2, 5, 7, 2, 30, 3, 13, 27, 5, 23, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0]


def test_flops_formula_is_the_official_one_on_llama_7b():
    assert LLAMA_7B.full(576) == official_origin_flops()
    for n in (576, 314, 37, 1):
        for layer in (0, 5, 31):
            assert LLAMA_7B.rest(n, layer) == official_rest_flops(n, layer)
    for schedule, target in ((PUBLISHED_90, 0.1), (PUBLISHED_50, 0.5)):
        spent, n = 0, 576  # fit_model's accounting for one sample deleting exactly the schedule
        for count in schedule:
            spent += n * 4096**2 * 3 + n**2 * 4096 * 2
            n -= count
            spent += n * 4096**2 + 3 * 11008 * 4096 * n
        assert LLAMA_7B.of_schedule(schedule, 576) == spent
        # the published schedules cost their budget by this formula (a little more: the per-layer counts are
        # floor-averaged over samples, and the fit stops at the budget before the remaining layers' deletions)
        assert target <= spent / official_origin_flops() < target + 0.005
    schedule_file = json.loads((REPO / "recipes" / "schedules" / "fitprune_llava15_7b_90.json").read_text())
    assert schedule_file["schedule"] == PUBLISHED_90


class FakeProbe:
    """A sample through a fabricated LLM: layer l's attention over the tokens left is a causal softmax of fixed
    random logits (2 heads), so deleting a token changes every later layer's attention, as in a real LLM."""

    def __init__(self, logits, prefix, visual_count):
        self.logits, self.prefix, self.n = logits, prefix, visual_count  # (layers, H, L, L)
        self.reset()

    @property
    def visual_tokens(self):
        return self.n

    def reset(self):
        self.index = torch.arange(self.logits.shape[-1])

    def attention(self, layer):
        z = self.logits[layer][:, self.index][:, :, self.index]
        causal = torch.ones(len(self.index), len(self.index), dtype=torch.bool).tril()
        return z.masked_fill(~causal, -torch.inf).softmax(-1).max(dim=0).values  # (L', L')

    def run_layer(self, layer):
        visual = (self.index >= self.prefix) & (self.index < self.prefix + self.n)
        return self.attention(layer), visual, ~visual & (self.index >= self.prefix + self.n)

    def delete(self, positions):
        keep = torch.ones(len(self.index), dtype=torch.bool)
        keep[positions] = False
        self.index = self.index[keep]


def official_fit(probes, reduction_ratio, sys_len, vtokens, h, inter, layers):
    """statistical_analysis.py re-derived (loops, slicing at sys_len, unique-count intersection), over the fake
    LLM. Returns [(alpha, flops_reach, scheme)] of every pass and the final max_alpha."""
    weightsum_cross, weightsum_self = {}, {}
    for s, probe in enumerate(probes):  # compute_attention_weights: the unpruned attentions
        probe.reset()
        weightsum_cross[s], weightsum_self[s] = {}, {}
        for i in range(layers):
            a = probe.attention(i)
            weightsum_cross[s][i] = a[sys_len + vtokens:, sys_len:sys_len + vtokens].sum().item() / (a.shape[0] - sys_len - vtokens)
            weightsum_self[s][i] = a[sys_len:sys_len + vtokens, sys_len:sys_len + vtokens].sum().item() / vtokens

    def fit_model(mid_alpha):
        origin_flops = ((vtokens * h * h * 3 + vtokens * vtokens * h + vtokens * h * vtokens
                         + vtokens * h * h) + (h * inter * vtokens * 3)) * layers
        already_use_flops, left = 0, {s: vtokens for s in range(len(probes))}
        scheme = {i: 0 for i in range(layers)}
        for probe in probes:
            probe.reset()
        for layer_idx in range(layers):
            flops_forcast = 0
            for vtk_num in left.values():
                already_use_flops += vtk_num * h**2 * 3 + vtk_num**2 * h * 2
                flops_forcast += official_rest_flops(vtk_num, layer_idx, h, inter, layers)
            if (already_use_flops + flops_forcast) / len(left) <= origin_flops * (1 - reduction_ratio):
                return True, [scheme[i] // len(probes) for i in range(layers)]
            for s, probe in enumerate(probes):
                a, n = probe.attention(layer_idx), left[s]
                focus = a[sys_len + n:, sys_len:sys_len + n].sum(dim=0) / (a.shape[1] - sys_len - n)
                img = (a[sys_len:sys_len + n, sys_len:sys_len + n] / n).sum(dim=0)
                counts = []
                for values, reference in ((focus, weightsum_cross[s][layer_idx]), (img, weightsum_self[s][layer_idx])):
                    order, total, count = torch.argsort(values), values.sum(), n - 1  # n - 1: the loop never breaks
                    for i in range(len(order)):
                        if total - values[order[:i]].sum() < reference - reference * mid_alpha:
                            count = max(i - 1, 0)
                            break
                    counts.append(order[:count])
                combined_val, combined_counts = torch.cat(counts).unique(return_counts=True)
                both = combined_val[combined_counts > 1]
                scheme[layer_idx] += both.shape[0]
                keep = torch.ones(a.shape[0], dtype=torch.bool)
                keep[both + sys_len] = False
                probe.delete(keep.logical_not().nonzero().flatten())
                left[s] -= both.shape[0]
                already_use_flops += left[s] * h**2 + 3 * inter * h * left[s]
        return False, [scheme[i] // len(probes) for i in range(layers)]

    passes, max_alpha, min_alpha = [], 1.0, 0.0
    while max_alpha - min_alpha > (0.01 + 1e-6):
        mid_alpha = (min_alpha + max_alpha) / 2
        reach, scheme = fit_model(mid_alpha)
        passes.append((mid_alpha, reach, scheme))
        max_alpha, min_alpha = (mid_alpha, min_alpha) if reach else (max_alpha, mid_alpha)
    return passes, max_alpha


FAKE_DIMS = LLMDims(hidden=256, intermediate=688, layers=8)


def fake_probes(count=3, prefix=3, visual=20, text=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    length = prefix + visual + text
    return [FakeProbe(torch.randn(FAKE_DIMS.layers, 2, length, length, generator=generator, dtype=torch.float64) * 3, prefix, visual)
            for _ in range(count)]


@pytest.mark.parametrize("budget", [0.5, 0.15])
def test_fit_is_the_official_search_and_meets_the_budget(budget):
    probes = fake_probes()
    result = fit_schedule(probes, FAKE_DIMS, budget)
    passes, max_alpha = official_fit(fake_probes(), 1 - budget, sys_len=3, vtokens=20, h=FAKE_DIMS.hidden,
                                     inter=FAKE_DIMS.intermediate, layers=FAKE_DIMS.layers)
    reached = [scheme for _, reach, scheme in passes if reach]
    assert result.alpha == max_alpha and result.passes == len(passes) == 7
    assert result.schedule == reached[-1] and sum(result.schedule) > 0  # the smallest alpha that met the budget
    assert result.flops <= budget
    reference = reference_masses(probes, FAKE_DIMS.layers)
    assert not fit_pass(probes, reference, result.alpha - 1 / 128, FAKE_DIMS, budget).reached  # and no smaller one


def test_stack_probe_statistics_are_hf_output_attentions(text_tokenizer, make_batch):
    """compute_attention_weights reads the unpruned model's ``output_attentions``; the probes the command fits
    with run the LLM's layers one at a time, and must see the same."""
    model = fitprune_model(text_tokenizer, [0, 0])
    prompt = model.fuse(make_batch(model, count=1), for_generation=True)
    visual = prompt.visual_kind[0] >= 0
    probe = StackProbe(DecoderStack(model.llm), prompt.inputs_embeds[0], prompt.position_ids[0], visual)
    with torch.no_grad():
        masses = reference_masses([probe], 2)[0]
        attentions = model.llm.model.model(inputs_embeds=prompt.inputs_embeds, position_ids=prompt.position_ids,
                                           output_attentions=True).attentions
    start, n = int(visual.nonzero()[0]), int(visual.sum())
    for layer, (cross, own) in enumerate(masses):
        a = attentions[layer][0].max(dim=0).values.double()
        assert cross == pytest.approx(a[start + n:, start:start + n].sum().item() / (a.shape[0] - start - n), rel=1e-5)
        assert own == pytest.approx(a[start:start + n, start:start + n].sum().item() / n, rel=1e-5)
