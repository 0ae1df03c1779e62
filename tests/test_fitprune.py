"""FitPrune: pruning inside the LLM by a per-layer schedule, and the schedule's fit to a FLOPs budget.

Official code re-derived (ywh187/FitPrune):
- inference: ``LLaVA_1.5/llava/model/language_model/modeling_llama.py`` @ 36bb1160d77a3e29a58d3fdc0700f86f03b5c5d6
  (``LlamaAttention.forward``: head-wise max; ``[35:35+n, 35:35+n] / n`` summed over the visual queries times
  ``[35+n:, 35:35+n]`` summed over the text queries; ``sort(...)[:delete_scheme[layer]]`` deleted from the
  attention output, the residual and the position ids; the layer's cache keeps its input tokens),
- fit: ``LLaVA_1.5/llava/eval/statistical_analysis.py`` @ 2b70a5d8e795df3c4a23b03795e1d77657b14465
  (``compute_attention_weights``, ``fit_model``, ``rest_flops``, ``calculate_origin_flops``, the alpha search).
"""

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaModel

from tests.conftest import TINY_LLAMA, build_mask_llava
from tests.recipe_utils import REPO, small_data
from tokencompose.cli import Tool, run_tool
from tokencompose.data import ShardDataModule
from tokencompose.llm import CausalLM, FitPrune, FusedInputs, PlainDecoding, greedy_generate
from tokencompose.llm.fitprune import compact, fitprune_scores, lowest_visual
from tokencompose.llm.fitprune_fit import (
    LLAMA_7B,
    LLMDims,
    StackProbe,
    fit_pass,
    fit_schedule,
    fitprune_fit,
    reference_masses,
)
from tokencompose.llm.layers import DecoderStack
from tokencompose.recipes import model_from_args
from tokencompose.tokenizers import PatchPoolTokenizer

TINY_RECIPE = REPO / "recipes" / "tiny" / "fitprune.yaml"


def fitprune_model(text_tokenizer, schedule, layers=2, attn="eager", decoding=None):
    """Tiny LLaVA-1.5 (64 patch tokens) with FitPrune over a 2-layer (or ``layers``) LLaMA."""
    llm = CausalLM(text_tokenizer=text_tokenizer,
                   config={**TINY_LLAMA, "num_hidden_layers": layers, "attn_implementation": attn})
    return build_mask_llava(text_tokenizer, tokenizers={"patch": PatchPoolTokenizer(grid=None)}, scaler=None,
                            llm=llm, decoding=decoding or FitPrune(schedule=schedule)).eval()


def sharpen(model, factor=8.0):
    """Scale the queries and keys so that attention is peaked: at random initialisation it is nearly uniform,
    and any rule would then delete by position alone."""
    with torch.no_grad():
        for layer in model.llm.model.model.layers:
            layer.self_attn.q_proj.weight.mul_(factor)
            layer.self_attn.k_proj.weight.mul_(factor)
    return model


# ---------------------------------------------------------------------------------------------- inference
def test_all_zero_schedule_is_no_pruning(text_tokenizer, make_batch):
    model = fitprune_model(text_tokenizer, [0, 0])
    batch = make_batch(model, count=3)
    prompt = model.fuse(batch, for_generation=True)
    plain = model.llm(prompt.inputs_embeds, prompt.attention(), prompt.position_ids).logits[:, -1]
    assert_close(model.decoding.stepper(model.llm, prompt, use_cache=True).first(), plain, atol=1e-5, rtol=1e-4)
    pruned, model.decoding = model.generate(batch, max_new_tokens=4), PlainDecoding()
    assert pruned == model.generate(batch, max_new_tokens=4)
    model.decoding = FitPrune(schedule=[32, 0])  # the same check sees a real deletion
    assert not torch.allclose(model.decoding.stepper(model.llm, prompt, use_cache=True).first(), plain, atol=1e-3)


class LogitRecorder:
    """Passes a stepper's logits on and keeps them."""

    def __init__(self, stepper) -> None:
        self.stepper, self.logits = stepper, []

    def first(self):
        self.logits.append(self.stepper.first())
        return self.logits[-1]

    def next(self, embeds, positions):
        self.logits.append(self.stepper.next(embeds, positions))
        return self.logits[-1]


def test_cached_and_uncached_decoding_agree(text_tokenizer, make_batch):
    model = sharpen(fitprune_model(text_tokenizer, [24, 16, 8], layers=3))
    batch = make_batch(model, count=4)
    assert model.generate(batch, max_new_tokens=5, use_cache=True) == model.generate(batch, max_new_tokens=5, use_cache=False)
    prompt = model.fuse(batch, for_generation=True)
    assert len(set(prompt.attention_mask.sum(1).tolist())) > 1  # rows of two lengths: left padding in the caches
    runs = {}
    for use_cache in (True, False):  # step by step, the logits too (greedy tokens alone hide small errors)
        recorder = LogitRecorder(model.decoding.stepper(model.llm, prompt, use_cache))
        runs[use_cache] = greedy_generate(model.llm, prompt, 5, use_cache, stepper=recorder), recorder.logits
    assert torch.equal(runs[True][0], runs[False][0]) and len(runs[True][1]) == 5
    for cached, uncached in zip(runs[True][1], runs[False][1], strict=True):
        assert_close(cached, uncached, atol=1e-5, rtol=1e-4)


def one_row(prompt, row):
    """Row ``row`` of a left-padded prompt on its own, without padding."""
    valid = prompt.attention_mask[row].bool()
    return FusedInputs(prompt.inputs_embeds[row, valid][None], prompt.attention_mask[row, valid][None],
                       prompt.position_ids[row, valid][None], None, visual_kind=prompt.visual_kind[row, valid][None])


def test_a_row_gets_the_same_logits_in_any_batch(text_tokenizer, make_batch):
    """Rows padded differently, and a row without visual tokens (it deletes nothing, so the others' deletions
    stay in the sequence masked out): each row's logits are those of the row alone."""
    model = sharpen(fitprune_model(text_tokenizer, [24, 16, 8], layers=3))
    prompt = model.fuse(make_batch(model, count=4), for_generation=True)
    prompt.visual_kind[3] = -1  # row 3 is all text to FitPrune
    batched = model.decoding.stepper(model.llm, prompt, use_cache=True).first()
    for row in range(4):
        alone = model.decoding.stepper(model.llm, one_row(prompt, row), use_cache=True).first()
        assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-4)
    plain = one_row(prompt, 3)
    assert_close(batched[3], model.llm(plain.inputs_embeds, plain.attention(), plain.position_ids).logits[0, -1],
                 atol=1e-5, rtol=1e-4)


def test_score_on_a_hand_checked_case():
    """Positions 0 text (before the image), 1-3 image, 4-5 text. Head 0 holds the head-wise max everywhere
    but at (5, 2), where head 1 does. Per visual key: text-query sums 0.3 / 0.5 / 0.1, visual-query sums
    0.8 / 0.4 / 0.45; the scores (x 1/3) 0.24 / 0.2 / 0.045: lowest 1 = {3}, lowest 2 = {3, 2}. By the text
    sum alone the lowest 2 would be {3, 1}, by the visual sum alone the lowest 1 would be {2}."""
    head0 = torch.zeros(6, 6)
    head0[1, 1] = 0.5
    head0[2, 1], head0[2, 2] = 0.2, 0.3
    head0[3, 1], head0[3, 2], head0[3, 3] = 0.1, 0.1, 0.45
    head0[4, 1], head0[4, 2], head0[4, 3] = 0.2, 0.3, 0.05
    head0[5, 1], head0[5, 3] = 0.1, 0.05
    head1 = head0 * 0.5
    head1[5, 2] = 0.2
    attention = torch.stack([head0, head1])[None]  # (1, 2, 6, 6)
    visual = torch.tensor([[False, True, True, True, False, False]])
    text = torch.tensor([[False, False, False, False, True, True]])
    score = fitprune_scores(attention, visual, text)
    assert_close(score[0, 1:4], torch.tensor([0.24, 0.2, 0.045]) / 3)
    assert lowest_visual(score, visual, 1).nonzero()[:, 1].tolist() == [3]
    assert lowest_visual(score, visual, 2).nonzero()[:, 1].tolist() == [2, 3]
    assert lowest_visual(score, visual, 5).nonzero()[:, 1].tolist() == [1, 2, 3]  # never text


def test_compact_keeps_rows_that_delete_fewer_masked():
    dropped = torch.tensor([[False, True, True, False], [False, False, True, False], [False] * 4])
    valid = torch.tensor([[True] * 4, [True] * 4, [False, True, True, True]])
    keep, kept_valid = compact(dropped, valid)
    assert keep.tolist() == [[0, 1, 2, 3]] * 3  # the third row (a text-only row) deletes nothing
    assert kept_valid.tolist() == [[True, False, False, True], [True, True, False, True], [False, True, True, True]]
    keep, kept_valid = compact(dropped[:2], valid[:2])
    assert keep.tolist() == [[0, 2, 3], [0, 1, 3]] and kept_valid.tolist() == [[True, False, True], [True] * 3]


def expected_deleted(headmax, visual, count):
    """Official ranking on one unpadded sample (image contiguous): ``sort(cross * self)[:count]`` -> positions."""
    start, n = int(visual.nonzero()[0]), int(visual.sum())
    own = (headmax[start:start + n, start:start + n] / n).sum(0)
    cross = headmax[start + n:, start:start + n].sum(0)
    return set((torch.sort(cross * own).indices[:count] + start).tolist())


def test_deleted_tokens_are_the_lowest_by_the_official_score(text_tokenizer, make_batch):
    """Each row of a padded batch deletes what the official rule deletes on that sample alone, computed from
    HF's ``output_attentions``: layer 0 from the whole prompt; layer 1 from a one-layer HF model holding layer
    1's weights, run on layer 0's hidden states of the tokens left (the official deletion follows the attention,
    so what enters layer 1 is layer 0's output at the kept positions)."""
    schedule = [20, 12, 6]
    model = sharpen(fitprune_model(text_tokenizer, schedule, layers=3))
    prompt = model.fuse(make_batch(model, count=4), for_generation=True)
    assert len(set(prompt.attention_mask.sum(1).tolist())) > 1  # rows are padded differently
    stepper = model.decoding.stepper(model.llm, prompt, use_cache=True)
    stepper.first()
    hf = model.llm.model.model  # the transformers LlamaModel
    config = copy.deepcopy(hf.config)
    config.num_hidden_layers = 1
    layer1 = LlamaModel(config).eval()
    layer1.layers[0].load_state_dict(hf.layers[1].state_dict())
    mean_rule_differs = by_position = False
    for row in range(4):
        valid = prompt.attention_mask[row].bool()
        embeds, positions = prompt.inputs_embeds[row, valid][None], prompt.position_ids[row, valid][None]
        visual = (prompt.visual_kind[row] >= 0)[valid]
        with torch.no_grad():
            out = hf(inputs_embeds=embeds, position_ids=positions, output_attentions=True, output_hidden_states=True)
        headmax = out.attentions[0][0].max(dim=0).values
        deleted0 = expected_deleted(headmax, visual, schedule[0])
        assert set(stepper.deleted[0][row, valid].nonzero().flatten().tolist()) == deleted0
        head_mean = expected_deleted(out.attentions[0][0].mean(dim=0), visual, schedule[0])
        mean_rule_differs |= head_mean != deleted0
        by_position |= deleted0 == set(visual.nonzero().flatten()[-schedule[0]:].tolist())
        left = torch.tensor([i not in deleted0 for i in range(len(visual))])
        with torch.no_grad():
            attention1 = layer1(inputs_embeds=out.hidden_states[1][:, left], position_ids=positions[:, left],
                                output_attentions=True).attentions[0][0]
        in_left = left.nonzero().flatten()  # position among the tokens left -> position in the prompt
        deleted1 = {int(in_left[i]) for i in expected_deleted(attention1.max(dim=0).values, visual[left], schedule[1])}
        assert set(stepper.deleted[1][row, valid].nonzero().flatten().tolist()) == deleted1
    assert mean_rule_differs and not by_position  # the check tells head-wise max from a mean, and from position


def test_kept_fraction_counts_the_tokens_entering_each_layer():
    policy = FitPrune(schedule=[2, 1, 0])
    assert policy.tokens_per_layer(4, 3) == [4, 2, 1]
    assert policy.kept_fraction(4, 3) == pytest.approx(7 / 12)
    assert policy.tokens_per_layer(4, 5) == [4, 2, 1, 1, 1]  # layers past the schedule delete nothing
    assert FitPrune(schedule=[9, 9]).tokens_per_layer(4, 3) == [4, 0, 0]


# ---------------------------------------------------------------------------------------------- bad settings
def test_bad_schedules_fail_at_build_time_naming_the_key(text_tokenizer, tmp_path):
    with pytest.raises(ValueError, match=r"model.decoding \(FitPrune\): schedule: 3 per-layer counts.*2 layers"):
        fitprune_model(text_tokenizer, [1, 2, 3])
    with pytest.raises(ValueError, match=r"schedule: deletes 65 visual tokens.*brings 64"):
        fitprune_model(text_tokenizer, [60, 5])
    with pytest.raises(ValueError, match=r"attn_implementation: eager"):
        fitprune_model(text_tokenizer, [1, 0], attn="sdpa")
    with pytest.raises(ValueError, match=r"counts >= 0.*\(1, -1\)"):
        FitPrune(schedule=[1, -1])
    with pytest.raises(ValueError, match="exactly one"):
        FitPrune()
    with pytest.raises(FileNotFoundError, match="schedule_file='nope.json'"):
        FitPrune(schedule_file="nope.json")
    (tmp_path / "bad.json").write_text('{"layers": [1, 2]}')
    with pytest.raises(ValueError, match="has no `schedule` list"):
        FitPrune(schedule_file=str(tmp_path / "bad.json"))
    (tmp_path / "long.json").write_text('{"schedule": [1, 2, 3]}')
    with pytest.raises(ValueError, match=r"schedule_file='.*long.json': 3 per-layer counts"):
        fitprune_model(text_tokenizer, None, decoding=FitPrune(schedule_file=str(tmp_path / "long.json")))


# ---------------------------------------------------------------------------------------------- the fit
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


FITPRUNE_TOOL = Tool("tokencompose.commands.fitprune:fitprune_command", "fit a FitPrune schedule to a FLOPs budget")


def test_fitprune_command_writes_a_schedule_the_tiny_recipe_runs_with(synthetic_root, tmp_path, capsys):
    """``tokencompose fitprune`` (its command-line grammar, as ``tokencompose.cli`` runs a tool) on the tiny
    recipe -> a schedule file -> the tiny recipe loads it and generates, with and without a cache."""
    out = tmp_path / "fitted" / "schedule.json"
    overrides = [*small_data(synthetic_root), "--model.init_weights", "null"]
    shards = str(synthetic_root / "val-000000.tar")
    argv = ["--config", str(TINY_RECIPE), *overrides, "--budget", "0.5", "--samples", "4", "--shards", shards,
            "--out", str(out), "--model.decoding.init_args.schedule_file", str(tmp_path / "not_yet.json")]
    summary = run_tool("fitprune", FITPRUNE_TOOL, argv)  # the recipe's own schedule file need not exist yet
    assert "written to" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["schedule"] == summary["schedule"] and sum(summary["schedule"]) > 0 and written["fit_flops"] <= 0.5
    assert written["visual_tokens"] == 64 and written["llm"] == {"hidden": 64, "intermediate": 128, "layers": 2}
    dims = LLMDims(64, 128, 2)
    assert written["schedule_flops"] == dims.of_schedule(summary["schedule"], 64) / dims.full(64)
    model = model_from_args(["--config", str(TINY_RECIPE), *overrides, "--model.decoding.init_args.schedule_file", str(out)])
    model.eval()
    assert model.decoding.schedule == summary["schedule"]
    data = ShardDataModule(val=shards, batch_size=2, transform=model.data_transform())
    batch = next(iter(data.val_dataloader()))
    answers = model.generate(batch, max_new_tokens=3, use_cache=True)
    assert answers == model.generate(batch, max_new_tokens=3, use_cache=False) and len(answers) == 2
    with pytest.raises(ValueError, match="attn_implementation: eager"):
        fitprune_fit(["--config", str(TINY_RECIPE), *overrides, "--model.llm.init_args.attn_implementation", "sdpa"],
                     str(tmp_path / "never.json"), budget=0.5, shards=shards, samples=1)
    assert not (tmp_path / "never.json").exists()
    with pytest.raises(ValueError, match=r"budget=1.5"):
        fitprune_fit(["--config", str(TINY_RECIPE)], str(out), budget=1.5, shards=shards)
    assert math.isclose(json.loads(out.read_text())["flops_budget"], 0.5)  # the earlier file is untouched


def test_fitprune_command_help_comes_from_the_signature_and_loads_no_torch():
    probe = ("import sys\nfrom tokencompose.cli import Tool, run_tool\n"
             f"try: run_tool('fitprune', Tool({FITPRUNE_TOOL.target!r}, ''), ['--help'])\nexcept SystemExit: pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout and "--budget" in out.stdout and "--shards" in out.stdout and "--ckpt_path" in out.stdout
