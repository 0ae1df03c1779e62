"""measure_cost: warm-up + repeated timings with median and spread, a decode speed that is measured even when
answers end at once, and a peak-memory column that says what it measured."""

import pytest
import torch

from tokencompose.eval.cost import PROCESS_PEAK, Spread, measure_cost, spread
from tokencompose.llm.generation import greedy_generate


def test_spread_is_the_median_and_the_interquartile_range():
    assert spread([1.0, 2.0, 3.0, 4.0, 100.0]) == Spread(3.0, 2.0, 5)  # an outlier moves neither
    assert spread([5.0]) == Spread(5.0, 0.0, 1)
    with pytest.raises(ValueError, match="no measurements"):
        spread([])


def test_decode_speed_is_measured_when_answers_stop_after_one_token(mask_llava, make_batch):
    model = mask_llava.eval()
    batch = make_batch(model, 2)
    cost = measure_cost(model, batch, samples=2, max_new_tokens=1, repeats=3, decode_steps=4).columns()
    assert cost["decode_tokens_per_s"] > 0  # before: 0.0 (no decode step inside a one-token answer)
    assert cost["timed_runs"] == 2 * 3
    assert cost["latency_ms"] >= cost["ttft_ms"] > 0 and cost["ttft_ms_iqr"] >= 0
    assert cost["peak_memory_kind"] == PROCESS_PEAK and cost["peak_memory_mb"] > 0  # on CPU: the process's RSS


def test_a_fixed_length_decode_runs_every_step_past_eos(mask_llava, make_batch):
    model = mask_llava.eval()
    prompt = model.fuse(make_batch(model, 1), for_generation=True)
    eos = model.llm.text_tokenizer.eos_token_id
    with torch.no_grad():  # force EOS first: the default stops there and pads, stop_at_eos=False keeps stepping
        model.llm.model.lm_head.bias = torch.nn.Parameter(torch.full((model.llm.model.lm_head.out_features,), -1e4))
        model.llm.model.lm_head.bias[eos] = 1e4
        stopped = greedy_generate(model.llm, prompt, 4)
        kept = greedy_generate(model.llm, prompt, 4, stop_at_eos=False)
    pad = model.llm.text_tokenizer.pad_token_id
    assert pad != eos and stopped[0, 1:].eq(pad).all() and kept[0].eq(eos).all()


@pytest.mark.parametrize(("key", "value"), [("repeats", 0), ("samples", 0), ("decode_steps", 1), ("warmup", -1)])
def test_bad_settings_name_the_setting(mask_llava, make_batch, key, value):
    with pytest.raises(ValueError, match=f"{key}={value}"):
        measure_cost(mask_llava, make_batch(mask_llava, 1), **{key: value})
