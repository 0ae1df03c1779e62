import pytest
import torch
from torch.testing import assert_close

from tests.conftest import TINY_OPEN_CLIP
from tokencompose.encoders import OpenCLIPEncoder
from tokencompose.tokenizers import (
    CLSAttentionSelector,
    MatryoshkaPoolTokenizer,
    MatryoshkaQueryTransformer,
    PatchPoolTokenizer,
    QueryCompressor,
)
from tokencompose.tokenizers.queries import resize_positions, sincos_2d


def test_sincos_table_matches_the_mae_formula():
    table = sincos_2d(8, 2)  # positions (col, row): (0,0), (1,0), (0,1), (1,1)
    assert table.shape == (4, 8)
    assert_close(table[1, :2], torch.tensor([torch.sin(torch.tensor(1.0)), torch.sin(torch.tensor(0.01))]))
    assert_close(table[2, 4:6], torch.tensor([torch.sin(torch.tensor(1.0)), torch.sin(torch.tensor(0.01))]))
    assert_close(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))


def test_query_compressor_gives_c_squared_tokens(hf_encoder):
    compressor = QueryCompressor(side=2, heads=4)
    compressor.attach(hf_encoder)
    features = hf_encoder(torch.randn(3, 3, 64, 64))
    stream = compressor(features)
    assert stream.tokens.shape == (3, 4, 64) and compressor.num_tokens(hf_encoder) == 4
    other = hf_encoder(torch.randn(3, 3, 64, 64))
    assert not torch.allclose(compressor(other).tokens, stream.tokens)  # the tokens depend on the image
    with pytest.raises(ValueError, match="heads"):
        QueryCompressor(heads=5).attach(hf_encoder)


def test_mqt_uses_the_first_m_queries_and_all_equals_the_plain_transformer(hf_encoder):
    mqt = MatryoshkaQueryTransformer(num_queries=16, heads=4)
    mqt.attach(hf_encoder)
    mqt.eval()
    features = hf_encoder(torch.randn(2, 3, 64, 64))
    full = mqt(features).tokens
    mqt.active = 4
    assert_close(mqt(features).tokens, full[:, :4])  # queries attend independently: the first m are a prefix
    mqt.active = None
    plain = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    plain.load_state_dict(mqt.attention.state_dict())
    values = mqt.ln_v(features.patches.flatten(1, 2))
    keys = mqt.ln_k(resize_positions(mqt.positions, 4, (8, 8))).expand(2, -1, -1)  # positions only, as upstream
    queries = mqt.ln_q(mqt.queries + mqt.positions).expand(2, -1, -1)
    assert_close(plain(queries, keys, values)[0], full)
    mqt.train()
    counts = {mqt(features).tokens.shape[1] for _ in range(30)}
    assert counts <= set(range(2, 17, 2)) and len(counts) > 3  # m is sampled per training batch


def test_m3_full_scale_is_all_patches_and_scales_nest(hf_encoder):
    features = hf_encoder(torch.randn(2, 3, 64, 64))
    m3 = MatryoshkaPoolTokenizer(scales=(1, 4, 16, 64))
    assert_close(m3(features).tokens, PatchPoolTokenizer(grid=None)(features).tokens)
    m3.use_budget(4)
    assert m3(features).tokens.shape[1] == 4
    m3.use_budget(1)
    assert_close(m3(features).tokens[:, 0], features.patches.mean((1, 2)))
    assert m3.budget_variants() == [1, 4, 16, 64]
    with pytest.raises(ValueError, match="squares"):
        MatryoshkaPoolTokenizer(scales=(2, 4))


@pytest.mark.parametrize("kind", ["hf", "open_clip"])
def test_fastervlm_keeps_top_cls_attention_patches_in_order(kind, hf_encoder):
    encoder = hf_encoder if kind == "hf" else OpenCLIPEncoder(config=TINY_OPEN_CLIP)
    selector = CLSAttentionSelector(keep=5, layer=-1)
    selector.attach(encoder)
    pixels = torch.randn(2, 3, 64, 64)
    features = encoder(pixels)
    last = encoder.num_blocks - 1
    trace = encoder.trace_block(last, encoder.block_input(pixels, last))
    expected_attention = trace.attention[:, :, 0, 1:].mean(1)
    assert_close(features.cls_attention, expected_attention)
    stream = selector(features)
    index = expected_attention.topk(5, dim=1).indices.sort(dim=1).values
    assert_close(stream.tokens, features.patches.flatten(1, 2)[torch.arange(2)[:, None], index])
    selector.keep = None  # keeping everything is LLaVA-1.5
    assert_close(selector(features).tokens, features.patches.flatten(1, 2))
