"""FastV in a batch = FastV on each row alone.

The official KV-cache variant (pkunlp-icler/FastV ``src/FastV/lmms-eval-with-kvcache/fastv_kvcache.py`` @
49dfad77) runs one prompt at a time and keeps ``int(N * keep_ratio)`` of its N image tokens. In a left-padded
batch a row must keep the same tokens: before, a row with padding gave up its padding instead of visual tokens
and so kept more of them than alone.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.pruning_utils import one_row, sharpen
from tests.test_schemes import fastv_model


@pytest.mark.parametrize("text_only_row", [False, True])
@pytest.mark.parametrize("rerank_each_step", [False, True])
def test_a_row_gets_the_same_logits_in_any_batch(text_tokenizer, make_batch, rerank_each_step, text_only_row):
    model = sharpen(fastv_model(text_tokenizer, drop_ratio=0.5, layer=1, rerank_each_step=rerank_each_step))
    prompt = model.fuse(make_batch(model, count=4), for_generation=True)
    assert len(set(prompt.attention_mask.sum(1).tolist())) > 1  # rows of different lengths: left padding
    if text_only_row:  # row 3 has no visual tokens: it drops nothing, the others' drops stay masked
        prompt.visual_kind[3] = -1
    batched = model.decoding.stepper(model.llm, prompt, use_cache=True).first()
    for row in range(4):
        alone = model.decoding.stepper(model.llm, one_row(prompt, row), use_cache=True).first()
        assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-4)


def test_each_row_keeps_int_n_times_the_ratio_of_its_own_visual_tokens():
    """Row 0: 4 visual of 7, no padding; row 1: two padding positions, then 2 visual. Keep ratio 0.5: row 0
    keeps 2 of 4 (drops 2), row 1 keeps 1 of 2 (drops 1, never its padding instead)."""
    from tokencompose.llm import FastV

    attention = torch.zeros(2, 1, 7, 7)
    attention[0, 0, -1] = torch.tensor([0.1, 0.3, 0.05, 0.2, 0.1, 0.1, 0.15])
    attention[1, 0, -1] = torch.tensor([0.0, 0.0, 0.1, 0.4, 0.2, 0.1, 0.2])
    visual = torch.tensor([[False, True, True, True, True, False, False],
                           [False, False, False, True, True, False, False]])
    valid = torch.tensor([[True] * 7, [False, False, True, True, True, True, True]])
    keep, kept_valid = FastV(layer=1, drop_ratio=0.5).keep_index(attention, valid, visual)
    assert keep.tolist() == [[0, 1, 3, 4, 5, 6], [0, 1, 2, 3, 5, 6]]  # one length: row 0's second drop masked
    rows = [[p for p, ok in zip(k, v, strict=True) if ok] for k, v in zip(keep.tolist(), kept_valid.tolist(), strict=True)]
    assert rows == [[0, 1, 3, 5, 6], [2, 3, 5, 6]]
