"""SparseVLM (tokencompose.llm.SparseVLM): equivalences, the official rule on hand-checked cases, bad settings.

The official behaviour is Gumpest/SparseVLMs v1.5 at commit 535f8baef705733d3758dea6e3fb2ad367b0f869:
``llava/model/language_model/modelling_sparse_llama.py`` (``LlamaDynamicvitModel.forward``, the inference branch
of the sparse layers), ``score.py`` (``attn_postprocess_topk``, ``sparse_token_dict``) and ``utils.py``
(``cluster_and_merge``); the 96 list from ``score.py`` at 9e1f649ef6a78878e2b10d1d6f49ecd7f4d84094.
"""

import copy
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from tests.conftest import TINY_LLAMA, build_mask_llava
from tokencompose.llm import CausalLM, FusedInputs, HideBehindStream, PlainDecoding, SparseVLM
from tokencompose.llm.sparsevlm import positions_of, prune_step, rater_scores
from tokencompose.llm.token_merging import cluster_and_merge, tie_break_noise
from tokencompose.tokenizers import PatchPoolTokenizer

FOUR_LAYERS = {**TINY_LLAMA, "num_hidden_layers": 4, "attn_implementation": "eager"}


def sparsevlm_model(text_tokenizer, llm_config=FOUR_LAYERS, **policy):
    """Tiny LLaVA-1.5 shape: the 8x8 = 64 patch tokens of a 64 px image, a 4-layer eager LLaMA."""
    return build_mask_llava(
        text_tokenizer,
        tokenizers={"patch": PatchPoolTokenizer(grid=None)},
        scaler=None,
        llm=CausalLM(text_tokenizer=text_tokenizer, config=llm_config),
        decoding=SparseVLM(**policy),
    ).eval()


def official_cluster_and_merge(x, cluster_num, noise):
    """utils.py ``cluster_and_merge`` @ 535f8ba, step by step (its ``torch.rand * 1e-6`` given as ``noise``)."""
    batch, tokens, width = x.shape
    dist_matrix = (x[:, :, None, :] - x[:, None, :, :]).norm(dim=-1, p=2) / (width ** 0.5)
    dist_nearest, _ = torch.topk(dist_matrix, k=cluster_num, dim=-1, largest=False)
    density = (-(dist_nearest ** 2).mean(dim=-1)).exp() + noise
    mask = (density[:, None, :] > density[:, :, None]).type(x.dtype)
    dist_max = dist_matrix.flatten(1).max(dim=-1)[0][:, None, None]
    dist, _ = (dist_matrix * mask + dist_max * (1 - mask)).min(dim=-1)
    _, index_down = torch.topk(dist * density, k=cluster_num, dim=-1)
    centre_rows = dist_matrix[torch.arange(batch)[:, None], index_down]  # index_points
    idx_cluster = centre_rows.argmin(dim=1)
    idx_cluster[torch.arange(batch)[:, None].expand(batch, cluster_num).reshape(-1), index_down.reshape(-1)] = \
        torch.arange(cluster_num)[None].expand(batch, cluster_num).reshape(-1)
    idx = idx_cluster + torch.arange(batch)[:, None] * cluster_num
    token_weight = x.new_ones(batch, tokens, 1)
    all_weight = token_weight.new_zeros(batch * cluster_num, 1)
    all_weight.index_add_(0, idx.reshape(-1), token_weight.reshape(-1, 1))
    norm_weight = token_weight / (all_weight + 1e-6)[idx]
    merged = x.new_zeros(batch * cluster_num, width)
    merged.index_add_(0, idx.reshape(-1), (x * norm_weight).reshape(-1, width))
    return merged.reshape(batch, cluster_num, width)


def official_cut(h, attention, v_start, v_num, t_token_idx, keep):
    """The inference branch of one sparse layer in ``LlamaDynamicvitModel.forward`` @ 535f8ba, batch 1: ``h`` the
    layer's output, ``attention`` its weights, ``t_token_idx`` the raters relative to the text start ->
    (the new hidden states, their position_ids, the new v_token_num)."""
    text_start = v_start + v_num
    relation = attention.mean(1)[:, t_token_idx + text_start, v_start:text_start].mean(1)  # attn_postprocess_topk
    mask = torch.zeros_like(relation, dtype=torch.bool)
    mask[0][torch.topk(relation, min(keep, v_num - 1), dim=1)[1]] = True
    policy = torch.ones(1, h.shape[1])
    policy[:, v_start:text_start] = mask.float()
    sparse = h[:, torch.where(policy == 0)[1]]
    stage1 = torch.where(mask == 0)[1]
    stage2 = sparse[:, relation[0][stage1].topk(int(stage1.shape[0] * 0.3) + 1)[1]]
    cluster_num = int(stage2.shape[1] / 10) + 1
    merged = official_cluster_and_merge(stage2, cluster_num, tie_break_noise(1, stage2.shape[1]))
    select = h[:, torch.where(policy == 1)[1]]
    kept = int(mask.sum())
    out = torch.cat([select[:, :v_start + kept], merged, select[:, v_start + kept:]], dim=1)
    return out, torch.arange(out.shape[1])[None], kept + cluster_num  # position_ids[:, :len(select) + cluster_num]


def test_dpc_knn_merge_equals_the_official_function():
    torch.manual_seed(0)
    x = torch.randn(2, 23, 16)
    x[1, 5:8] = x[1, 4]  # equal tokens: equal densities, the noise decides
    noise = tie_break_noise(2, 23)
    for clusters in (1, 3, 7):
        assert_close(cluster_and_merge(x, clusters, noise), official_cluster_and_merge(x, clusters, noise))
    assert not torch.allclose(cluster_and_merge(x, 3, noise), official_cluster_and_merge(x, 3, torch.zeros(2, 23)))
    with pytest.raises(ValueError, match="clusters=24"):
        cluster_and_merge(x, 24)


def test_two_cuts_equal_the_official_sparse_layers():
    """Two consecutive sparse layers (as at 2 and 6): the recycled tokens of the first are visual at the second,
    positions are renumbered 0..n-1, and what stays is the official ``select_and_merge_token``."""
    torch.manual_seed(1)
    v_start, v_num, text, width = 5, 60, 9, 16
    t_token_idx = torch.tensor([0, 3, 4, 8])
    h = torch.randn(1, v_start + v_num + text, width)
    valid = torch.ones(1, h.shape[1], dtype=torch.bool)
    visual = torch.zeros_like(valid)
    visual[0, v_start:v_start + v_num] = True
    raters = torch.zeros_like(valid)
    raters[0, t_token_idx + v_start + v_num] = True
    for keep in (30, 12):
        attention = torch.randn(1, 4, h.shape[1], h.shape[1]).softmax(-1)
        expected, expected_positions, v_num = official_cut(h, attention, v_start, v_num, t_token_idx, keep)
        cut = prune_step(rater_scores(attention, raters), h, valid, visual, raters, [keep], recycle=True)
        h, valid, visual, raters = cut.apply(h), cut.valid, cut.visual, cut.raters
        assert_close(h, expected)
        assert torch.equal(positions_of(valid), expected_positions)
        assert int(visual.sum()) == v_num and visual[0, v_start:v_start + v_num].all()


def test_raters_and_kept_tokens_are_the_rule_on_hf_attention(text_tokenizer, make_batch):
    """The raters and the cut at the first pruning layer, recomputed from the Hugging Face model's own attention
    weights and hidden states (``output_attentions``/``output_hidden_states``) on the same left-padded prompts."""
    model = sparsevlm_model(text_tokenizer, budget=None, keep=[40, 20], layers=(1, 2))
    prompt = model.fuse(make_batch(model, count=4), for_generation=True)  # the 4th question is longer
    stepper = model.decoding.stepper(model.llm, prompt, use_cache=True)
    stepper.first()
    with torch.no_grad():
        out = model.llm.model(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention(),
                              position_ids=prompt.position_ids, output_attentions=True, output_hidden_states=True)
    embeds, valid = prompt.inputs_embeds, prompt.attention_mask.bool()
    visual = (prompt.visual_kind >= 0) & valid
    first = stepper.prunings[0]
    after_layer_1 = first.apply(out.hidden_states[2])  # hidden_states[2]: the output of layer 1
    assert len(set(int(n) for n in valid.sum(1))) > 1  # rows of different lengths: padding is exercised
    for row in range(4):
        image = visual[row].nonzero().flatten()
        text = (valid[row] & ~visual[row]).nonzero().flatten()
        text = text[text > image[0]]
        relevance = torch.softmax(embeds[row, image] @ embeds[row, text].T, dim=-1).mean(0)
        raters = text[relevance > relevance.mean()]
        assert 0 < len(raters) < len(text)
        assert stepper.raters[row].nonzero().flatten().tolist() == raters.tolist()
        score = out.attentions[1][row].mean(0)[raters][:, image].mean(0)  # layer 1, heads, then raters
        kept = image[score.topk(40).indices].sort().values
        assert first.kept[row].tolist() == kept.tolist()
        is_pruned = ~torch.isin(image, kept)
        recycled = image[is_pruned][score[is_pruned].topk(int(24 * 0.3) + 1).indices]  # 24 pruned -> 8
        assert first.recycled[row].tolist() == recycled.tolist()
        hidden = out.hidden_states[2][row]
        merged = official_cluster_and_merge(hidden[recycled][None], 8 // 10 + 1, tie_break_noise(1, 8))[0]
        stay = valid[row].nonzero().flatten()
        stay = stay[~torch.isin(stay, image[is_pruned])]
        split = int((stay <= image[-1]).sum())
        expected = torch.cat([hidden[stay[:split]], merged, hidden[stay[split:]]])
        assert_close(after_layer_1[row][first.valid[row]], expected, atol=1e-5, rtol=1e-4)
        second = stepper.prunings[1]
        assert len(second.kept[row]) == 20 and int(second.visual[row].sum()) == 20 + (int(21 * 0.3) + 1) // 10 + 1


def hf_layers(lm, layers, norm):
    """The Hugging Face model with only ``layers`` (a slice) and, without ``norm``, no final norm."""
    part = copy.deepcopy(lm.model)
    part.model.layers = nn.ModuleList(list(part.model.layers)[layers])
    if not norm:
        part.model.norm = nn.Identity()
    return part


def test_prefill_and_a_cached_step_equal_the_official_pipeline_on_hf_layers(text_tokenizer, make_batch):
    """One prompt (the official runs batch 1), cuts after layers 0 and 2 of 4: the Hugging Face layers run in three
    slices with ``official_cut`` between them give the stepper's logits. A generated token then sits at each
    layer's own length (the official ``position_ids = past_key_value.get_usable_length(...)``), the cut prompt
    before it."""
    model = sparsevlm_model(text_tokenizer, budget=None, keep=[40, 20], layers=(0, 2))
    batch = make_batch(model, count=1)
    prompt = model.fuse(batch, for_generation=True)
    stepper = model.decoding.stepper(model.llm, prompt, use_cache=True)
    first = stepper.first()
    new = model.llm.embed(first.argmax(-1)[:, None])  # (1, 1, D)
    second = stepper.next(new, prompt.position_ids[:, -1:] + 1)

    embeds = prompt.inputs_embeds
    image = (prompt.visual_kind[0] >= 0).nonzero().flatten()
    v_start, v_num = int(image[0]), len(image)
    text = embeds[:, v_start + v_num:]
    relevance = (embeds[:, v_start:v_start + v_num] @ text.transpose(1, 2)).softmax(2).mean(1)  # (1, T)
    t_token_idx = torch.where(relevance > relevance.mean())[1]
    slices = [hf_layers(model.llm, slice(0, 1), False), hf_layers(model.llm, slice(1, 3), False),
              hf_layers(model.llm, slice(3, 4), True)]

    def pipeline(x, extra):  # extra generated tokens at the end of x, never cut
        v, positions = v_num, torch.arange(x.shape[1])[None]
        for i, part in enumerate(slices):
            with torch.no_grad():
                out = part(inputs_embeds=x, position_ids=positions, output_attentions=True, output_hidden_states=True)
            if i == 2:
                return out.logits[:, -1]
            h, attention = out.hidden_states[-1], out.attentions[-1]
            prompt_length = h.shape[1] - extra
            cut, _, v = official_cut(h[:, :prompt_length], attention[:, :, :prompt_length, :prompt_length],
                                     v_start, v, t_token_idx, (40, 20)[i])
            x = torch.cat([cut, h[:, prompt_length:]], dim=1)
            positions = torch.arange(x.shape[1])[None]  # renumbered: the new token at the cut length

    assert_close(first, pipeline(embeds, 0), atol=1e-5, rtol=1e-4)
    assert_close(second, pipeline(torch.cat([embeds, new], dim=1), 1), atol=1e-5, rtol=1e-4)


def test_keeping_every_token_is_plain_decoding(text_tokenizer, make_batch):
    model = sparsevlm_model(text_tokenizer, budget=None, keep=[64, 64, 64], layers=(0, 1, 2))
    batch = make_batch(model, count=3)
    prompt = model.fuse(batch, for_generation=True)
    plain = model.llm(prompt.inputs_embeds, prompt.attention(), prompt.position_ids).logits[:, -1]
    stepper = model.decoding.stepper(model.llm, prompt, use_cache=True)
    assert_close(stepper.first(), plain, atol=1e-5, rtol=1e-4)
    assert stepper.prunings == [None, None, None]
    pruned, model.decoding = model.generate(batch, max_new_tokens=4), PlainDecoding()
    assert pruned == model.generate(batch, max_new_tokens=4)


@pytest.mark.parametrize("recycle", [True, False])
def test_cached_and_uncached_decoding_agree(text_tokenizer, make_batch, recycle):
    model = sparsevlm_model(text_tokenizer, budget=None, keep=[24, 12, 6], layers=(0, 1, 2), recycle=recycle)
    batch = make_batch(model, count=4)
    cached = model.generate(batch, max_new_tokens=5, use_cache=True)
    assert cached == model.generate(batch, max_new_tokens=5, use_cache=False)
    prompt = model.fuse(batch, for_generation=True)  # and the logits of each step, fed the same tokens
    with_cache, without = (model.decoding.stepper(model.llm, prompt, use_cache=flag) for flag in (True, False))
    logits = with_cache.first()
    assert_close(without.first(), logits)
    for step in range(1, 4):
        new = model.llm.embed(logits.argmax(-1)[:, None])
        logits = with_cache.next(new, prompt.position_ids[:, -1:] + step)
        assert_close(without.next(new, prompt.position_ids[:, -1:] + step), logits, atol=1e-5, rtol=1e-4)
    model.decoding = PlainDecoding()
    assert cached != model.generate(batch, max_new_tokens=5)  # the cut does change the answers


# Hand-derived from the official code for 576 visual tokens, per pruning layer 2, 6, 15: (kept, recycled), where
# P = n - kept pruned, m = int(0.3 P) + 1 of them clustered into m // 10 + 1; the next layer sees kept + recycled.
# 192: 576 -> 300 + 9 (P 276, m 83); 309 -> 200 + 4 (P 109, m 33); 204 -> 110 + 3 (P 94, m 29)
PUBLISHED_CUTS = {
    192: [(300, 9), (200, 4), (110, 3)],
    128: [(303, 9), (110, 7), (36, 3)],  # P 273 m 82; P 202 m 61; P 81 m 25
    96: [(238, 11), (48, 7), (26, 1)],  # P 338 m 102; P 201 m 61; P 29 m 9
    64: [(66, 16), (30, 2), (17, 1)],  # P 510 m 154; P 52 m 16; P 15 m 5
}


@pytest.mark.parametrize("budget", sorted(PUBLISHED_CUTS))
def test_published_budgets_on_a_llava15_shaped_prompt(text_tokenizer, budget):
    """LLaVA-1.5's prompt shape: 35 system tokens, 576 image tokens, the question; layers 2, 6, 15 of a 17-layer LLM."""
    torch.manual_seed(0)
    config = dict(FOUR_LAYERS, num_hidden_layers=17, hidden_size=32, intermediate_size=64, max_position_embeddings=1024)
    lm = CausalLM(text_tokenizer=text_tokenizer, config=config).eval()
    length = 35 + 576 + 24
    kinds = torch.full((1, length), -1)
    kinds[0, 35:35 + 576] = 0
    prompt = FusedInputs(torch.randn(1, length, 32), torch.ones(1, length, dtype=torch.long),
                         torch.arange(length)[None], None, visual_kind=kinds)
    policy = SparseVLM(budget=budget)
    assert policy.keep_counts(576) == tuple(kept for kept, _ in PUBLISHED_CUTS[budget])
    stepper = policy.stepper(lm, prompt, use_cache=True)
    with torch.no_grad():
        stepper.first()
    seen = []
    for cut, (kept, recycled) in zip(stepper.prunings, PUBLISHED_CUTS[budget], strict=True):
        assert len(cut.kept[0]) == kept and len(cut.assignment[0].unique()) == recycled
        assert int(cut.visual.sum()) == kept + recycled and int(cut.valid.sum()) == 35 + 24 + kept + recycled
        seen.append(kept + recycled)
    per_layer = [576] * 3 + [seen[0]] * 4 + [seen[1]] * 9 + [seen[2]]  # cuts after layers 2, 6 and 15
    assert policy.visual_counts(576, 17) == per_layer
    assert policy.kept_fraction(576, 17) == pytest.approx(sum(per_layer) / (17 * 576))


def test_budget_lists_scale_to_other_visual_token_counts():
    assert SparseVLM(budget=192).keep_counts(64) == (33, 22, 12)  # 300, 200, 110 * 64 / 576, rounded
    assert SparseVLM(budget=64).keep_counts(16) == (2, 1, 1)  # 1.83, 0.83, 0.47 -> at least 1
    assert SparseVLM(budget=None, keep=[5, 3], layers=(0, 1)).keep_counts(576) == (5, 3)
    no_recycling = SparseVLM(budget=192, recycle=False)
    assert no_recycling.visual_counts(576, 32) == [576] * 3 + [300] * 4 + [200] * 9 + [110] * 16
    assert no_recycling.kept_fraction(576, 32) == pytest.approx((3 * 576 + 4 * 300 + 9 * 200 + 16 * 110) / (32 * 576))


@pytest.mark.parametrize("settings, message", [
    (dict(budget=100), "budget=100"),
    (dict(budget=None), "give `budget` or `keep`"),
    (dict(budget=192, keep=[3, 2, 1]), "give `budget` or `keep`"),
    (dict(budget=192, layers=(2, 6)), "layers=\\[2, 6\\]"),
    (dict(budget=None, keep=[3, 2], layers=(2, 6, 15)), "keep=\\[3, 2\\]"),
    (dict(budget=None, keep=[3, 4], layers=(2, 6)), "never increase"),
    (dict(budget=None, keep=[3, 0], layers=(2, 6)), "counts >= 1"),
    (dict(budget=None, keep=[3, 2], layers=(6, 2)), "increasing"),
    (dict(budget=None, keep=[3, 2], layers=(-1, 2)), "increasing"),
])
def test_bad_settings_fail_when_built(settings, message):
    with pytest.raises(ValueError, match=message):
        SparseVLM(**settings)


def test_settings_the_model_cannot_run_fail_at_build_naming_the_key(text_tokenizer):
    with pytest.raises(ValueError, match=r"model.decoding \(SparseVLM\): layers=\[2, 6, 15\]: the LLM has 4 layers"):
        sparsevlm_model(text_tokenizer, budget=192)
    with pytest.raises(ValueError, match=r"keep counts \[80, 40\] exceed the 64 visual tokens"):
        sparsevlm_model(text_tokenizer, budget=None, keep=[80, 40], layers=(0, 1))
    with pytest.raises(ValueError, match="attn_implementation: eager"):
        sparsevlm_model(text_tokenizer, llm_config=TINY_LLAMA, budget=None, keep=[8], layers=(0,))
    with pytest.raises(ValueError, match=r"model.attention"):
        build_mask_llava(text_tokenizer, llm=CausalLM(text_tokenizer=text_tokenizer, config=FOUR_LAYERS),
                         attention=HideBehindStream(stream="cls"), decoding=SparseVLM(budget=None, keep=[4], layers=(0,)))
    assert math.isclose(sparsevlm_model(text_tokenizer, budget=192, layers=(0, 1, 2)).decoding.kept_fraction(64, 4),
                        (64 + (33 + 2) + (22 + 1) + (12 + 1)) / (4 * 64))  # keep 33, 22, 12; P 31 -> m 10 -> 2


def test_the_full_recipe_fits_a_llava15_shaped_model(text_tokenizer):
    """recipes/sparsevlm.yaml's decoding on a 24 x 24 = 576 patch encoder and a 32-layer eager LLaMA (tiny widths)."""
    from tests.recipe_utils import REPO, ParseOnlyCLI
    from tokencompose.encoders import HFCLIPEncoder

    settings = ParseOnlyCLI(args=["--config", str(REPO / "recipes" / "sparsevlm.yaml")], run=False).config
    decoding = SparseVLM(**vars(settings["model"]["decoding"]["init_args"]))
    encoder = HFCLIPEncoder(config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        image_size=336, patch_size=14, projection_dim=32))
    llm_config = dict(FOUR_LAYERS, num_hidden_layers=32, hidden_size=32, intermediate_size=64)
    model = build_mask_llava(text_tokenizer, encoder=encoder, tokenizers={"patch": PatchPoolTokenizer(grid=None)},
                             scaler=None, llm=CausalLM(text_tokenizer=text_tokenizer, config=llm_config),
                             decoding=decoding, max_length=1024)
    assert model.visual_tokens_per_image() == {"patch": 576}
    assert decoding.keep_counts(576) == (300, 200, 110)
    # cut after layers 2, 6, 15: 3 layers see 576, 4 see 300 + 9, 9 see 200 + 4, 16 see 110 + 3 (PUBLISHED_CUTS)
    assert decoding.kept_fraction(576, 32) == pytest.approx((3 * 576 + 4 * 309 + 9 * 204 + 16 * 113) / (32 * 576))
