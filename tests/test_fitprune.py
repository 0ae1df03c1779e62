"""FitPrune: pruning inside the LLM by a per-layer schedule, and ``tokencompose fitprune`` end to end (the fit
itself: tests/test_fitprune_fit.py).

Official code re-derived: ywh187/FitPrune ``LLaVA_1.5/llava/model/language_model/modeling_llama.py`` @
36bb1160d77a3e29a58d3fdc0700f86f03b5c5d6 (``LlamaAttention.forward``: head-wise max; ``[35:35+n, 35:35+n] / n``
summed over the visual queries times ``[35+n:, 35:35+n]`` summed over the text queries;
``sort(...)[:delete_scheme[layer]]`` deleted from the attention output, the residual and the position ids; the
layer's cache keeps its input tokens).
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
from tests.pruning_utils import assert_no_pruning_is_plain, one_row, sharpen
from tests.recipe_utils import REPO, small_data
from tokencompose.cli import Tool, run_tool
from tokencompose.data import ShardDataModule
from tokencompose.llm import CausalLM, FitPrune, greedy_generate
from tokencompose.llm.fitprune import fitprune_scores
from tokencompose.llm.fitprune_fit import LLMDims, fitprune_fit
from tokencompose.llm.visual_pruning import compact, lowest_visual
from tokencompose.recipes import model_from_args
from tokencompose.tokenizers import PatchPoolTokenizer

TINY_RECIPE = REPO / "recipes" / "tiny" / "fitprune.yaml"


def fitprune_model(text_tokenizer, schedule, layers=2, attn="eager", decoding=None):
    """Tiny LLaVA-1.5 (64 patch tokens) with FitPrune over a 2-layer (or ``layers``) LLaMA."""
    llm = CausalLM(text_tokenizer=text_tokenizer,
                   config={**TINY_LLAMA, "num_hidden_layers": layers, "attn_implementation": attn})
    return build_mask_llava(text_tokenizer, tokenizers={"patch": PatchPoolTokenizer(grid=None)}, scaler=None,
                            llm=llm, decoding=decoding or FitPrune(schedule=schedule)).eval()


# ---------------------------------------------------------------------------------------------- inference
def test_all_zero_schedule_is_no_pruning(text_tokenizer, make_batch):
    model = fitprune_model(text_tokenizer, [0, 0])
    prompt, plain = assert_no_pruning_is_plain(model, make_batch)
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
