import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from tests.conftest import TINY_OPEN_CLIP
from tokencompose.compose import compose_streams
from tokencompose.encoders import OpenCLIPEncoder
from tokencompose.projectors import MLPProjector
from tokencompose.tokenizers import (
    CLSAttentionSelector,
    MatryoshkaPoolTokenizer,
    MatryoshkaQueryTransformer,
    PatchPoolTokenizer,
    QueryCompressor,
)
from tokencompose.tokenizers.queries import resize_positions, sincos_2d
from tokencompose.types import EncoderOutput


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
    m3.attach(hf_encoder)
    pooled = lambda: m3.project(m3(features), nn.Identity()).tokens  # noqa: E731
    assert_close(pooled(), PatchPoolTokenizer(grid=None)(features).tokens)
    m3.use_budget(4)
    assert pooled().shape[1] == 4
    m3.use_budget(1)
    assert_close(pooled()[:, 0], features.patches.mean((1, 2)))
    assert m3.budget_variants() == [1, 4, 16, 64]
    with pytest.raises(ValueError, match="squares"):
        MatryoshkaPoolTokenizer(scales=(2, 4))
    with pytest.raises(ValueError, match=r"scales \[9\] do not divide the encoder's 8x8 grid"):
        MatryoshkaPoolTokenizer(scales=(1, 9)).attach(hf_encoder)


def official_m3_pool(projected: torch.Tensor, scale: int) -> torch.Tensor:
    """Re-derived from mu-cai/matryoshka-mm llava/model/llava_arch.py @ 163ac77b71db2c671a738f54e589b3ca332f94b9
    (same at f6aada8c): ``encode_images`` runs ``mm_projector`` on all H*W patch features, then
    ``matryoshka_vis_token_process`` views them as (N, H, W, C), permutes to (N, C, H, W), applies
    ``F.avg_pool2d(kernel_size=stride=int(np.sqrt(H_W / scale)))`` and flattens back to (N, scale, C)."""
    n, hw, c = projected.shape
    h = int(hw**0.5)
    grid = projected.view(n, h, h, c).permute(0, 3, 1, 2)
    size = int(np.sqrt(hw / scale))
    return F.avg_pool2d(grid, kernel_size=size, stride=size).permute(0, 2, 3, 1).reshape(n, -1, c)


def test_m3_pools_after_a_nonlinear_projector_as_released():
    patches = torch.randn(2, 24, 24, 16)  # LLaVA-1.5's 24x24 grid
    features = EncoderOutput(cls=torch.randn(2, 16), patches=patches, embedding=torch.randn(2, 8))
    projector = MLPProjector(16, 32)  # mlp2x_gelu: not linear, so the order matters
    project_all = nn.ModuleDict({"shared": projector})
    m3, before = MatryoshkaPoolTokenizer(), MatryoshkaPoolTokenizer(pool_before_projector=True)
    for scale in (1, 9, 36, 144, 576):
        m3.use_budget(scale)
        before.use_budget(scale)
        expected = official_m3_pool(projector(patches.flatten(1, 2)), scale)  # (2, scale, 32)
        ours = compose_streams({"patch": m3(features)}, project_all, True, {"patch": m3})
        assert_close(ours.tokens, expected)
        assert ours.valid.shape == (2, scale) and ours.valid.all()
        old_order = compose_streams({"patch": before(features)}, project_all, True, {"patch": before}).tokens
        if scale < 576:
            assert (old_order - expected).abs().max() > 1e-3  # pooling first is a different model
        else:
            assert_close(old_order, expected)


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
