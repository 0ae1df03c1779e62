import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from tests.conftest import TINY_OPEN_CLIP
from tokencompose.compose import compose_streams
from tokencompose.encoders import OpenCLIPEncoder
from tokencompose.projectors import LinearProjector, MLPProjector
from tokencompose.tokenizers import (
    CLSAttentionSelector,
    MatryoshkaPoolTokenizer,
    MatryoshkaQueryTransformer,
    PatchPoolTokenizer,
    QueryCompressor,
)
from tokencompose.tokenizers.queries import sincos_2d, sincos_2d_float16
from tokencompose.types import EncoderOutput


def test_sincos_table_matches_the_mae_formula():
    table = sincos_2d(8, 2)  # positions (col, row): (0,0), (1,0), (0,1), (1,1)
    assert table.shape == (4, 8)
    assert_close(table[1, :2], torch.tensor([torch.sin(torch.tensor(1.0)), torch.sin(torch.tensor(0.01))]))
    assert_close(table[2, 4:6], torch.tensor([torch.sin(torch.tensor(1.0)), torch.sin(torch.tensor(0.01))]))
    assert_close(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))


def test_query_compressor_gives_c_squared_tokens(hf_encoder):
    compressor = QueryCompressor(hf_encoder.hidden_size, side=2, heads=4)
    features = hf_encoder(torch.randn(3, 3, 64, 64))
    stream = compressor(features)
    assert stream.tokens.shape == (3, 4, 64) and compressor.num_tokens(hf_encoder) == 4
    other = hf_encoder(torch.randn(3, 3, 64, 64))
    assert not torch.allclose(compressor(other).tokens, stream.tokens)  # the tokens depend on the image
    with pytest.raises(ValueError, match="heads"):
        QueryCompressor(64, heads=5)


# MQT-LLaVA parity tests re-derive gordonhu608/MQT-LLaVA llava/model/multimodal_projector/builder.py
# @ 92c35d063912fd5e21d64713b710dfb6bdbdf95a (get_2d_sincos_pos_embed, get_abs_pos, Resampler).


def official_sincos_table(embed_dim: int, grid_size: int) -> np.ndarray:
    """``get_2d_sincos_pos_embed`` as in that builder: numpy float32, ``np.meshgrid(grid_w, grid_h)``, the first
    half of the width from ``grid[0]`` (the column index), sin then cos on each half."""

    def one_axis(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)), axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    return np.concatenate([one_axis(embed_dim // 2, grid[0]), one_axis(embed_dim // 2, grid[1])], axis=1)


def test_mqt_sincos_table_is_the_released_float16_table(hf_encoder):
    # ``Resampler.__init__``: pos_embed = torch.from_numpy(get_2d_sincos_pos_embed(kv_dim, grid_size)).half()
    released = torch.from_numpy(official_sincos_table(1024, 16)).half()  # CLIP-L width, 256 queries
    assert sincos_2d_float16(1024, 16).dtype == torch.float16
    assert torch.equal(sincos_2d_float16(1024, 16), released)
    mqt = MatryoshkaQueryTransformer(hf_encoder.hidden_size, num_queries=16, heads=4)
    assert mqt.positions.dtype == torch.float16
    assert torch.equal(mqt.positions, torch.from_numpy(official_sincos_table(64, 4)).half())


def official_resampler(mqt: MatryoshkaQueryTransformer, x: torch.Tensor, m: int, grid: tuple[int, int]) -> torch.Tensor:
    """``Resampler.forward`` (before ``x @ self.proj``) with fresh eps-1e-6 LayerNorms (``norm_layer``), a
    sequence-first ``nn.MultiheadAttention`` holding our weights, and ``get_abs_pos`` (bicubic in float32, back to
    the table's float16); our float32 run reads the float16 keys as float32."""
    pos_embed = mqt.positions  # float16, as registered upstream
    side = int(math.sqrt(pos_embed.size(0)))
    abs_pos = F.interpolate(pos_embed.float().reshape(1, side, side, -1).permute(0, 3, 1, 2), size=grid,
                            mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(0, 2).to(pos_embed.dtype)
    ln_q, ln_k, ln_v = (nn.LayerNorm(x.shape[-1], eps=1e-6) for _ in range(3))
    attn = nn.MultiheadAttention(x.shape[-1], mqt.heads)
    attn.load_state_dict(mqt.attention.state_dict())
    x = x.permute(1, 0, 2)  # (L, N, C)
    n = x.shape[1]
    q = mqt.queries[:m].unsqueeze(1).repeat(1, n, 1)
    out = attn(ln_q(q + pos_embed[:m].unsqueeze(1)), ln_k(abs_pos.float().unsqueeze(1).repeat(1, n, 1)), ln_v(x))[0]
    return out.permute(1, 0, 2)


def test_mqt_matches_the_official_resampler_and_uses_the_first_m_queries(hf_encoder):
    mqt = MatryoshkaQueryTransformer(hf_encoder.hidden_size, num_queries=16, heads=4)
    mqt.eval()
    assert {mqt.ln_q.eps, mqt.ln_k.eps, mqt.ln_v.eps} == {1e-6}
    # small-variance patches, so that LayerNorm's eps shows in the result
    patches = 1e-2 * torch.randn(2, 8, 8, 64)
    features = EncoderOutput(cls=torch.randn(2, 64), patches=patches, embedding=torch.randn(2, 32))
    with torch.no_grad():
        full = mqt(features).tokens
        assert_close(full, official_resampler(mqt, patches.flatten(1, 2), 16, (8, 8)))
        mqt.active = 4
        assert_close(mqt(features).tokens, full[:, :4])  # queries attend independently: the first m are a prefix
        assert_close(mqt(features).tokens, official_resampler(mqt, patches.flatten(1, 2), 4, (8, 8)))
    assert mqt.budget_variants() == list(range(2, 17, 2))  # what MQT's training draws m from (SampledBudget)


def test_sampled_budget_follows_its_own_generator_and_its_state_dict(hf_encoder):
    """gordonhu608/MQT-LLaVA draws m uniformly from {2, 4, ..., 256} per batch; here from a checkpointed generator."""
    from tokencompose.tokenizers import SampledBudget

    mqt = MatryoshkaQueryTransformer(hf_encoder.hidden_size, num_queries=16, heads=4).train()
    features = EncoderOutput(cls=torch.randn(2, 64), patches=torch.randn(2, 8, 8, 64), embedding=torch.randn(2, 32))

    def draws(schedule, n=12):
        seen = []
        for _ in range(n):
            schedule.training_loss(lambda: seen.append(mqt(features).tokens.shape[1]) or torch.zeros(()), {"patch": mqt})
        return seen

    a, b = SampledBudget("patch", seed=3), SampledBudget("patch", seed=3)
    torch.manual_seed(0)
    first = draws(a)
    torch.manual_seed(1)  # the global RNG plays no part
    assert draws(b) == first and set(first) <= set(range(2, 17, 2)) and len(set(first)) > 3
    assert mqt.active is None  # the configured test budget is back after every step
    state = a.state_dict()  # mid-run: the generator's position is in the checkpoint
    ahead = draws(a)
    resumed = SampledBudget("patch", seed=99)
    resumed.load_state_dict(state)
    assert draws(resumed) == ahead != first


def test_linear_projector_without_bias_is_mqt_proj():
    projector = LinearProjector(8, 16, bias=False)
    assert projector.linear.bias is None
    x = torch.randn(2, 3, 8)
    assert_close(projector(x), x @ projector.linear.weight.T)  # MQT's ``x @ self.proj``
    assert LinearProjector(8, 16).linear.bias is not None


def test_m3_full_scale_is_all_patches_and_scales_nest(hf_encoder):
    features = hf_encoder(torch.randn(2, 3, 64, 64))
    m3 = MatryoshkaPoolTokenizer(scales=(1, 4, 16, 64))
    pooled = lambda: m3.project(m3(features), nn.Identity()).tokens  # noqa: E731
    assert_close(pooled(), PatchPoolTokenizer(grid=None)(features).tokens)
    m3.use_budget(4)
    assert pooled().shape[1] == 4
    m3.use_budget(1)
    assert_close(pooled()[:, 0], features.patches.mean((1, 2)))
    assert m3.budget_variants() == [1, 4, 16, 64]
    with pytest.raises(ValueError, match="squares"):
        MatryoshkaPoolTokenizer(scales=(2, 4))
    from tests.conftest import build_mask_llava
    from tokencompose.data import shapes_text_tokenizer

    with pytest.raises(ValueError, match=r"model.tokenizers.patch .*scales \[9\] do not divide the encoder's 8x8 grid"):
        build_mask_llava(shapes_text_tokenizer(), tokenizers={"patch": MatryoshkaPoolTokenizer(scales=(1, 9))}, scaler=None)


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
    pixels = torch.randn(2, 3, 64, 64)
    features = encoder(pixels, selector.encoder_request())
    last = encoder.num_blocks - 1
    trace = encoder.trace_block(last, encoder.block_input(pixels, last))
    assert_close(features.cls_attention[-1], trace.attention[:, :, 0, 1:])  # per head, as requested
    expected_attention = trace.attention[:, :, 0, 1:].mean(1)
    stream = selector(features)
    index = expected_attention.topk(5, dim=1).indices.sort(dim=1).values
    assert_close(stream.tokens, features.patches.flatten(1, 2)[torch.arange(2)[:, None], index])
    selector.keep = None  # keeping everything is LLaVA-1.5
    assert_close(selector(features).tokens, features.patches.flatten(1, 2))
